// Shared loaders for the tokenizer tests: the real Llama 2 / Llama 3
// vocabularies in tests/data/tokenizer (loaded once per process) and small
// in-memory GGUF vocabularies built with gguf::Writer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/gguf/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tandem::tokenizer::testing {

std::string data_path(const std::string& name);

// Loaded once; fails the calling test (returns nullptr) if loading fails.
const Tokenizer* llama2();
const Tokenizer* llama3();
// Milliseconds the first llama3() load took (file open + FromGguf).
double llama3_load_ms();

// Parses a GGUF image written with `writer`.
absl::StatusOr<std::unique_ptr<Tokenizer>> FromWriter(const gguf::Writer& writer);

}  // namespace tandem::tokenizer::testing
