#include "runtime/engine/model_stream.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::engine {
namespace {

namespace tr = tandem::transport;

// User tags of the world communicator, apart from the step tags (step_command.h).
constexpr uint32_t kRequestTag = 0x4d53;  // "MS"
constexpr uint32_t kReplyTag = 0x4d54;
constexpr uint32_t kDataTag = 0x4d55;
// Bytes per data message: large enough to run at link speed, small enough
// that rank 0's two staging buffers stay small.
constexpr uint64_t kChunkBytes = 4 << 20;
// A header larger than this is refused before anything is allocated for it
// (the largest vocabularies make headers of tens of MB).
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 30;

enum class Kind : uint32_t { kHeader = 1, kRows = 2, kDone = 3 };

// A fetcher's request: n_rows rows of row_bytes, at offset, offset + stride, ...
struct StreamRequest {
  uint32_t kind = 0;
  uint32_t reserved = 0;
  uint64_t offset = 0;
  uint64_t row_bytes = 0;
  uint64_t stride = 0;
  uint64_t n_rows = 0;
};
// Rank 0's answer, then `bytes` of data in kChunkBytes messages when code is 0.
struct StreamReply {
  int32_t code = 0;
  uint32_t reserved = 0;
  uint64_t file_size = 0;
  uint64_t bytes = 0;
  char message[232] = {};
};
static_assert(std::is_trivially_copyable_v<StreamRequest> && sizeof(StreamRequest) == 40);
static_assert(std::is_trivially_copyable_v<StreamReply> && sizeof(StreamReply) == 256);

uint64_t n_chunks(uint64_t bytes) { return (bytes + kChunkBytes - 1) / kChunkBytes; }

// The request's packed size, or an error naming what is wrong with it.
absl::StatusOr<uint64_t> checked_size(const StreamRequest& r, uint64_t file_size) {
  uint64_t total = 0, last = 0, end = 0;
  if (r.row_bytes == 0 || r.n_rows == 0 || (r.n_rows > 1 && r.stride < r.row_bytes) ||
      __builtin_mul_overflow(r.row_bytes, r.n_rows, &total) ||
      __builtin_mul_overflow(r.stride, r.n_rows - 1, &last) ||
      __builtin_add_overflow(r.offset, last, &last) ||
      __builtin_add_overflow(last, r.row_bytes, &end) || end > file_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad range request: ", r.n_rows, " rows of ", r.row_bytes, " bytes from ",
                     r.offset, " every ", r.stride, " bytes, in a file of ", file_size));
  }
  return total;
}

// Bytes [from, from + n) of the request's packed rows, read from the file.
absl::Status pack_rows(const gguf::File& file, const StreamRequest& r, uint64_t from, uint64_t n,
                       uint8_t* dst) {
  while (n > 0) {
    const uint64_t row = from / r.row_bytes, in_row = from % r.row_bytes;
    const uint64_t take = std::min(n, r.row_bytes - in_row);
    TANDEM_RETURN_IF_ERROR(file.read_bytes(r.offset + row * r.stride + in_row, take, dst));
    dst += take;
    from += take;
    n -= take;
  }
  return absl::OkStatus();
}

void set_message(StreamReply& reply, const absl::Status& status) {
  reply.code = static_cast<int32_t>(status.code());
  const std::string text(status.message());
  std::memcpy(reply.message, text.data(), std::min(text.size(), sizeof reply.message - 1));
}

// Receives `total` bytes sent as kChunkBytes messages into dst, with two
// receives in flight so that the next chunk lands while this one completes.
absl::Status receive_chunks(tr::Communicator& comm, uint8_t* dst, uint64_t total,
                            tr::Deadline deadline) {
  const uint64_t chunks = n_chunks(total);
  std::unique_ptr<tr::Request> inflight[2];
  uint64_t posted = 0;
  for (uint64_t c = 0; c < chunks; ++c) {
    while (posted < chunks && posted < c + 2) {
      const uint64_t begin = posted * kChunkBytes;
      TANDEM_ASSIGN_OR_RETURN(
          inflight[posted % 2],
          comm.irecv(dst + begin, std::min(kChunkBytes, total - begin), 0, kDataTag));
      ++posted;
    }
    TANDEM_RETURN_IF_ERROR(inflight[c % 2]->wait(deadline));
    inflight[c % 2].reset();
  }
  return absl::OkStatus();
}

// The fetcher's view of rank 0's file: one request and its reply at a time.
class StreamedBytes final : public gguf::RemoteBytes {
 public:
  StreamedBytes(tr::Communicator& comm, std::string name, tr::Deadline deadline)
      : comm_(comm), name_(std::move(name)), deadline_(deadline) {}

  absl::Status read_rows(uint64_t offset, uint64_t row_bytes, uint64_t stride, uint64_t n_rows,
                         void* dst) const override {
    std::lock_guard<std::mutex> lock(mu_);
    StreamRequest request{.kind = static_cast<uint32_t>(Kind::kRows),
                          .offset = offset,
                          .row_bytes = row_bytes,
                          .stride = stride,
                          .n_rows = n_rows};
    TANDEM_ASSIGN_OR_RETURN(StreamReply reply, ask(comm_, request, name_, deadline_));
    if (reply.bytes != row_bytes * n_rows) {
      return absl::InternalError(absl::StrCat("streaming ", name_, ": rank 0 offers ", reply.bytes,
                                              " bytes for a request of ", row_bytes * n_rows));
    }
    return receive_chunks(comm_, static_cast<uint8_t*>(dst), reply.bytes, deadline_);
  }

  // Sends one request and returns rank 0's reply (an error when it refused).
  static absl::StatusOr<StreamReply> ask(tr::Communicator& comm, const StreamRequest& request,
                                         const std::string& name, tr::Deadline deadline) {
    StreamReply reply;
    TANDEM_ASSIGN_OR_RETURN(auto pending, comm.irecv(&reply, sizeof reply, 0, kReplyTag));
    TANDEM_RETURN_IF_ERROR(comm.send(&request, sizeof request, 0, kRequestTag, deadline));
    TANDEM_RETURN_IF_ERROR(pending->wait(deadline));
    if (reply.code != 0) {
      reply.message[sizeof reply.message - 1] = '\0';
      return absl::Status(static_cast<absl::StatusCode>(reply.code),
                          absl::StrCat("streaming ", name, " from rank 0: ", reply.message));
    }
    return reply;
  }

 private:
  tr::Communicator& comm_;
  const std::string name_;
  const tr::Deadline deadline_;
  mutable std::mutex mu_;
};

}  // namespace

struct ModelStreamServer::State {
  tr::Communicator& comm;
  const gguf::File* file;    // null when rank 0 could not open it:
  absl::Status file_error;   // then every request is answered with this
  std::vector<int> fetchers;
  tr::Deadline deadline;
  std::vector<uint8_t> staging[2];
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bytes_sent{0};
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  absl::Status status;
  std::thread thread;

  State(tr::Communicator& c, const gguf::File* f, absl::Status error, std::vector<int> who,
        tr::Deadline d)
      : comm(c), file(f), file_error(std::move(error)), fetchers(std::move(who)), deadline(d) {}

  void run() {
    absl::Status s = serve();
    std::lock_guard<std::mutex> lock(mu);
    status = s;
    finished = true;
    cv.notify_all();
  }

  absl::Status serve() {
    const size_t n = fetchers.size();
    std::vector<StreamRequest> requests(n);
    std::vector<std::unique_ptr<tr::Request>> pending(n);
    for (size_t i = 0; i < n; ++i) {
      TANDEM_ASSIGN_OR_RETURN(pending[i], comm.irecv(&requests[i], sizeof(StreamRequest),
                                                     fetchers[i], kRequestTag));
    }
    size_t remaining = n;
    while (remaining > 0) {
      if (stop.load()) return absl::CancelledError("streaming the model: stopped");
      if (tr::Clock::now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("streaming the model: ", remaining, " rank(s) still fetching"));
      }
      bool answered = false;
      for (size_t i = 0; i < n; ++i) {
        if (pending[i] == nullptr || !pending[i]->test()) continue;
        answered = true;
        const int peer = fetchers[i];
        if (absl::Status s = pending[i]->wait(deadline); !s.ok()) {
          return absl::Status(s.code(),
                              absl::StrCat("streaming the model to rank ", peer, ": ", s.message()));
        }
        pending[i].reset();
        if (requests[i].kind == static_cast<uint32_t>(Kind::kDone)) {
          --remaining;
          continue;
        }
        if (absl::Status s = answer(peer, requests[i]); !s.ok()) {
          return absl::Status(s.code(),
                              absl::StrCat("streaming the model to rank ", peer, ": ", s.message()));
        }
        TANDEM_ASSIGN_OR_RETURN(
            pending[i], comm.irecv(&requests[i], sizeof(StreamRequest), peer, kRequestTag));
      }
      // Rank 0 is loading its own shard meanwhile: leave it the CPU.
      if (!answered) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return absl::OkStatus();
  }

  absl::Status answer(int peer, const StreamRequest& request) {
    StreamReply reply;
    if (file == nullptr) {
      set_message(reply, absl::FailedPreconditionError(absl::StrCat(
                             "rank 0 cannot read the model itself: ", file_error.message())));
      return comm.send(&reply, sizeof reply, peer, kReplyTag, deadline);
    }
    reply.file_size = file->file_size();
    StreamRequest r = request;
    if (request.kind == static_cast<uint32_t>(Kind::kHeader)) {
      r = {.kind = request.kind, .offset = 0, .row_bytes = file->data_offset(),
           .stride = file->data_offset(), .n_rows = 1};
    } else if (request.kind != static_cast<uint32_t>(Kind::kRows)) {
      set_message(reply, absl::InvalidArgumentError(
                             absl::StrCat("unknown request kind ", request.kind)));
      return comm.send(&reply, sizeof reply, peer, kReplyTag, deadline);
    }
    absl::StatusOr<uint64_t> total = checked_size(r, file->file_size());
    if (!total.ok()) {
      set_message(reply, total.status());
      return comm.send(&reply, sizeof reply, peer, kReplyTag, deadline);
    }
    reply.bytes = *total;
    TANDEM_RETURN_IF_ERROR(comm.send(&reply, sizeof reply, peer, kReplyTag, deadline));
    // Two staging buffers: the next chunk is read while the last one is sent.
    std::unique_ptr<tr::Request> sending[2];
    for (uint64_t c = 0; c < n_chunks(*total); ++c) {
      const uint64_t begin = c * kChunkBytes, size = std::min(kChunkBytes, *total - begin);
      std::vector<uint8_t>& buffer = staging[c % 2];
      if (sending[c % 2] != nullptr) TANDEM_RETURN_IF_ERROR(sending[c % 2]->wait(deadline));
      if (buffer.size() < size) buffer.resize(kChunkBytes);
      TANDEM_RETURN_IF_ERROR(pack_rows(*file, r, begin, size, buffer.data()));
      TANDEM_ASSIGN_OR_RETURN(sending[c % 2], comm.isend(buffer.data(), size, peer, kDataTag));
      bytes_sent += size;
    }
    for (auto& s : sending) {
      if (s != nullptr) TANDEM_RETURN_IF_ERROR(s->wait(deadline));
    }
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<ModelStreamServer>> ModelStreamServer::Start(
    tr::Communicator& comm, const gguf::File* file, absl::Status file_error,
    std::vector<int> fetchers, tr::Deadline deadline) {
  for (int r : fetchers) {
    if (r <= 0 || r >= comm.size()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", r, " cannot fetch from rank 0"));
    }
  }
  auto state =
      std::make_unique<State>(comm, file, std::move(file_error), std::move(fetchers), deadline);
  state->thread = std::thread([s = state.get()] { s->run(); });
  return std::unique_ptr<ModelStreamServer>(new ModelStreamServer(std::move(state)));
}

ModelStreamServer::ModelStreamServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

ModelStreamServer::~ModelStreamServer() {
  state_->stop = true;
  if (state_->thread.joinable()) state_->thread.join();
}

absl::Status ModelStreamServer::finish(tr::Deadline deadline) {
  std::unique_lock<std::mutex> lock(state_->mu);
  if (!state_->cv.wait_until(lock, deadline, [&] { return state_->finished; })) {
    return absl::DeadlineExceededError("streaming the model: the fetching ranks did not finish");
  }
  return state_->status;
}

uint64_t ModelStreamServer::bytes_sent() const { return state_->bytes_sent.load(); }

absl::StatusOr<gguf::File> open_streamed_model(tr::Communicator& comm, const std::string& name,
                                               tr::Deadline deadline) {
  if (comm.rank() == 0) return absl::InvalidArgumentError("rank 0 streams to others, not from");
  StreamRequest request{.kind = static_cast<uint32_t>(Kind::kHeader)};
  TANDEM_ASSIGN_OR_RETURN(StreamReply reply, StreamedBytes::ask(comm, request, name, deadline));
  if (reply.bytes > kMaxHeaderBytes || reply.bytes > reply.file_size) {
    return absl::InvalidArgumentError(absl::StrCat("streaming ", name, ": a header of ",
                                                   reply.bytes, " bytes in a file of ",
                                                   reply.file_size, " is not believable"));
  }
  std::vector<uint8_t> header(reply.bytes);
  TANDEM_RETURN_IF_ERROR(receive_chunks(comm, header.data(), header.size(), deadline));
  return gguf::File::FromRemote(header, reply.file_size, name,
                                std::make_shared<StreamedBytes>(comm, name, deadline));
}

absl::Status finish_streamed_model(tr::Communicator& comm, tr::Deadline deadline) {
  StreamRequest done{.kind = static_cast<uint32_t>(Kind::kDone)};
  return comm.send(&done, sizeof done, 0, kRequestTag, deadline);
}

}  // namespace tandem::engine
