#include "partition/model_desc.h"

namespace tandem::partition {

const TensorDesc* ModelDesc::find(std::string_view tensor_name) const {
  for (const TensorDesc& t : tensors) {
    if (t.name == tensor_name) return &t;
  }
  return nullptr;
}

int64_t ModelDesc::total_bytes() const {
  int64_t total = 0;
  for (const TensorDesc& t : tensors) total += t.bytes();
  return total;
}

}  // namespace tandem::partition
