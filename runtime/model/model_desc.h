// The planner's description of a GGUF model (partition::ModelDesc), built
// from the header alone: metadata and the tensor directory, never the tensor
// data, so that it works on a 400B model's header-only file.
#pragma once

#include "absl/status/statusor.h"
#include "partition/model_desc.h"
#include "runtime/gguf/gguf.h"

namespace tandem::model {

// Reads the hyper-parameters the way LlamaConfig::FromGguf does, under the
// file's own architecture prefix (`<arch>.embedding_length`, ...), every
// tensor's shape and storage, and `<arch>.expert_count` to mark mixtures of
// experts (llama4, qwen3moe), which the planner then refuses by name. The KV
// cache is described as the engine stores it (kv_type elements, 16-position
// blocks).
// INVALID_ARGUMENT or NOT_FOUND, naming the file and the key, for a missing or
// malformed hyper-parameter or a tensor of an unknown type.
absl::StatusOr<partition::ModelDesc> model_desc_from_gguf(const gguf::File& file,
                                                          DType kv_type = DType::kF16);

}  // namespace tandem::model
