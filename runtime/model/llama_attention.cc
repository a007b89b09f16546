// Grouped-query attention over the paged KV cache: the attention kernel
// (kernels/cpu/attention.h) reads this layer of the cache through its view.
#include "runtime/kernels/cpu/attention.h"
#include "runtime/model/llama.h"
#include "runtime/model/llama_workspace.h"

namespace tandem::model {

void LlamaModel::attention(int64_t il, const Batch& batch, engine::KvCache& cache,
                           LlamaWorkspace& ws, kernels::ThreadPool& pool) const {
  kernels::attention(cache.layer_view(il), batch.seq_ids, batch.positions, ws.q.data(),
                     ws.attn.data(), *ws.attention, pool);
}

}  // namespace tandem::model
