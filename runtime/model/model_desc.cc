#include "runtime/model/model_desc.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/tensor/dtype.h"

namespace tandem::model {
namespace {

absl::StatusOr<int64_t> get_positive(const gguf::File& file, const std::string& key) {
  TANDEM_ASSIGN_OR_RETURN(int64_t v, file.get_i64(key));
  if (v <= 0 || v > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", key, " = ", v,
                                                   " is not a sensible positive count"));
  }
  return v;
}

absl::StatusOr<int64_t> get_optional(const gguf::File& file, const std::string& key,
                                     int64_t fallback) {
  if (file.find(key) == nullptr) return fallback;
  return get_positive(file, key);
}

}  // namespace

absl::StatusOr<partition::ModelDesc> model_desc_from_gguf(const gguf::File& file,
                                                          DType kv_type) {
  partition::ModelDesc m;
  TANDEM_ASSIGN_OR_RETURN(m.architecture, file.get_string("general.architecture"));
  const std::string p = m.architecture + ".";
  if (file.find("general.name") != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(m.name, file.get_string("general.name"));
  }
  if (m.name.empty()) m.name = file.path().substr(file.path().find_last_of('/') + 1);

  TANDEM_ASSIGN_OR_RETURN(m.n_experts, get_optional(file, p + "expert_count", 0));
  TANDEM_ASSIGN_OR_RETURN(m.n_experts_used, get_optional(file, p + "expert_used_count", 0));
  partition::ModelDims& d = m.dims;
  TANDEM_ASSIGN_OR_RETURN(d.dim, get_positive(file, p + "embedding_length"));
  TANDEM_ASSIGN_OR_RETURN(d.n_layers, get_positive(file, p + "block_count"));
  TANDEM_ASSIGN_OR_RETURN(d.n_heads, get_positive(file, p + "attention.head_count"));
  TANDEM_ASSIGN_OR_RETURN(d.n_kv_heads, get_optional(file, p + "attention.head_count_kv", d.n_heads));
  TANDEM_ASSIGN_OR_RETURN(d.head_dim, get_optional(file, p + "attention.key_length",
                                                   d.dim / d.n_heads));
  // A mixture of experts may give only its experts' width.
  TANDEM_ASSIGN_OR_RETURN(const int64_t expert_ffn,
                          get_optional(file, p + "expert_feed_forward_length", 0));
  if (m.n_experts > 0 && file.find(p + "feed_forward_length") == nullptr) {
    d.ffn_dim = expert_ffn;
  } else {
    TANDEM_ASSIGN_OR_RETURN(d.ffn_dim, get_positive(file, p + "feed_forward_length"));
  }
  TANDEM_ASSIGN_OR_RETURN(m.context_length, get_optional(file, p + "context_length", 0));

  const gguf::TensorInfo* embd = file.find_tensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": missing 2-D tensor 'token_embd.weight'"));
  }
  d.n_vocab = embd->dims[1];
  m.tied_output = file.find_tensor("output.weight") == nullptr;

  d.col_align = 1;
  for (const gguf::TensorInfo& t : file.tensors()) {
    const auto info = dtype_info(t.type);
    if (!info || info->block_size <= 0 || info->block_bytes == 0) {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", t.name,
                                                     "' has type ", dtype_name(t.type),
                                                     ", whose storage is unknown"));
    }
    partition::TensorDesc td;
    td.name = t.name;
    td.n_cols = t.dims.empty() ? 1 : t.dims[0];
    td.n_rows = t.n_rows();
    td.block_elements = info->block_size;
    td.block_bytes = static_cast<int64_t>(info->block_bytes);
    td.type_name = std::string(info->name);
    if (t.dims.size() >= 2) d.col_align = std::max(d.col_align, info->block_size);
    m.tensors.push_back(std::move(td));
  }
  if (kv_type != DType::kF16 && kv_type != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache type ", dtype_name(kv_type), ": want f16 or f32"));
  }
  m.kv_element_bytes = engine::kv_element_bytes(kv_type);
  m.kv_block_positions = engine::KvCacheConfig{}.block_size;
  return m;
}

}  // namespace tandem::model
