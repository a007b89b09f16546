// Header-only GGUFs shaped like published models: the metadata and tensor
// directory of a 4-bit (llama.cpp Q4_K_M-style) conversion, and no tensor
// data, so that planning a 400B model needs a few hundred kilobytes. They
// carry no vocabulary and cannot be run, only described and planned.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace tandem::testing {

// The shapes write_header_only_model knows: "llama-3.1-405b",
// "llama-4-maverick", "qwen3-235b".
std::vector<std::string> header_only_model_names();

// Writes the header of a model shaped like `like` to `path` (see
// gguf::Writer::write_header_only). INVALID_ARGUMENT for an unknown name.
absl::Status write_header_only_model(const std::string& path, std::string_view like);

}  // namespace tandem::testing
