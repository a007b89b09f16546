// The --kv-type flag of the commands that size or run a KV cache: f16 (the
// default, as in llama.cpp) or f32.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "runtime/tensor/dtype.h"

namespace tandem::launcher {

inline CLI::Option* add_kv_type_option(CLI::App& command, DType* type) {
  return command
      .add_option_function<std::string>(
          "--kv-type",
          [type](const std::string& name) { *type = name == "f32" ? DType::kF32 : DType::kF16; },
          "KV cache element type: f16 (default) or f32")
      ->check(CLI::IsMember({"f16", "f32"}));
}

}  // namespace tandem::launcher
