// The --kv-type flag of the commands that size or run a KV cache: f16 (the
// default, as in llama.cpp) or f32.
#pragma once

#include <map>
#include <string>

#include "CLI/CLI.hpp"
#include "runtime/tensor/dtype.h"

namespace tandem::launcher {

inline CLI::Option* add_kv_type_option(CLI::App& command, DType* type) {
  static const std::map<std::string, DType> kTypes = {{"f16", DType::kF16}, {"f32", DType::kF32}};
  return command.add_option("--kv-type", *type, "KV cache element type: f16 (default) or f32")
      ->transform(CLI::CheckedTransformer(kTypes, CLI::ignore_case));
}

}  // namespace tandem::launcher
