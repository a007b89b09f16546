#include "transport/split.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "transport/collectives/collective_state.h"

namespace tandem::transport {
namespace {

constexpr int kGroupShift = 25;  // tag bits 25..31: group_id + 1

class SplitCommunicator final : public Communicator {
 public:
  // `root_ranks[i]` is the root's rank of this group's rank i.
  SplitCommunicator(Communicator& root, std::vector<int> root_ranks, int rank, uint32_t group_id)
      : root_(root),
        root_ranks_(std::move(root_ranks)),
        rank_(rank),
        group_id_(group_id),
        tag_base_((group_id + 1) << kGroupShift),
        name_(std::string(root.backend()) + "/split") {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(root_ranks_.size()); }
  std::string_view backend() const override { return name_; }
  std::string link_path(int peer) const override {
    return peer >= 0 && peer < size() ? root_.link_path(root_ranks_[peer]) : "";
  }

  absl::StatusOr<std::unique_ptr<Request>> isend(const void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    TANDEM_ASSIGN_OR_RETURN(const int root_peer, translate(peer));
    TANDEM_ASSIGN_OR_RETURN(const uint32_t root_tag, translate_tag(tag));
    return root_.isend(data, bytes, root_peer, root_tag);
  }
  absl::StatusOr<std::unique_ptr<Request>> irecv(void* data, size_t bytes, int peer,
                                                 uint32_t tag) override {
    TANDEM_ASSIGN_OR_RETURN(const int root_peer, translate(peer));
    TANDEM_ASSIGN_OR_RETURN(const uint32_t root_tag, translate_tag(tag));
    return root_.irecv(data, bytes, root_peer, root_tag);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> split(std::span<const int> ranks,
                                                      uint32_t group_id) override {
    // Validate against this group, then express the ranks in the root's terms.
    std::vector<int> root_ranks;
    root_ranks.reserve(ranks.size());
    for (int r : ranks) {
      if (r < 0 || r >= size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("split: rank ", r, " is not in a group of ", size()));
      }
      root_ranks.push_back(root_ranks_[r]);
    }
    if (group_id == group_id_) {
      return absl::InvalidArgumentError(
          absl::StrCat("split: group_id ", group_id, " is already this group's"));
    }
    return make_split_communicator(root_, root_ranks, group_id);
  }

  // Aborting a group aborts the link it runs on: its peers see the failure,
  // as they would see a dead process.
  void abort(const absl::Status& reason) override { root_.abort(reason); }

 private:
  absl::StatusOr<int> translate(int peer) const {
    if (peer < 0 || peer >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("peer ", peer, " is not in a group of ", size()));
    }
    return root_ranks_[peer];
  }
  absl::StatusOr<uint32_t> translate_tag(uint32_t tag) const {
    if (tag >= kCommTagSpace) {
      return absl::InvalidArgumentError(
          absl::StrCat("tag ", tag, " is outside a group's tag space (below ", kCommTagSpace, ")"));
    }
    return tag_base_ | tag;
  }

  Communicator& root_;
  const std::vector<int> root_ranks_;
  const int rank_;
  const uint32_t group_id_;
  const uint32_t tag_base_;
  const std::string name_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> make_split_communicator(Communicator& parent,
                                                                      std::span<const int> ranks,
                                                                      uint32_t group_id) {
  if (group_id >= kMaxGroupId) {
    return absl::InvalidArgumentError(
        absl::StrCat("split: group_id ", group_id, " must be below ", kMaxGroupId));
  }
  if (ranks.empty()) return absl::InvalidArgumentError("split: no ranks");
  int my_rank = -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= parent.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("split: rank ", ranks[i], " is not in a world of ", parent.size()));
    }
    if (i > 0 && ranks[i] <= ranks[i - 1]) {
      return absl::InvalidArgumentError("split: ranks must be strictly ascending");
    }
    if (ranks[i] == parent.rank()) my_rank = static_cast<int>(i);
  }
  if (my_rank < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("split: this rank (", parent.rank(), ") is not among the ranks"));
  }
  return std::make_unique<SplitCommunicator>(parent, std::vector<int>(ranks.begin(), ranks.end()),
                                             my_rank, group_id);
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::split(std::span<const int> ranks,
                                                                  uint32_t group_id) {
  return make_split_communicator(*this, ranks, group_id);
}

}  // namespace tandem::transport
