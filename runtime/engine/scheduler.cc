#include "runtime/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/engine/stop_matcher.h"

namespace tandem::engine {
namespace {

double seconds_between(SchedulerClock::time_point a, SchedulerClock::time_point b) {
  return b > a ? std::chrono::duration<double>(b - a).count() : 0.0;
}

}  // namespace

// ---- RequestStream ----

bool RequestStream::read(StreamChunk* out, SchedulerClock::time_point until) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool ready = cv_.wait_until(lock, until, [&] {
    return !pending_.tokens.empty() || !pending_.text.empty() || pending_.result.has_value();
  });
  if (!ready) return false;
  out->clear();
  std::swap(*out, pending_);
  return true;
}

void RequestStream::append(int32_t token, std::string_view text) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.tokens.push_back(token);
    pending_.text.append(text);
  }
  cv_.notify_all();
}

void RequestStream::append_text(std::string_view text) {
  if (text.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.text.append(text);
  }
  cv_.notify_all();
}

void RequestStream::finish(SequenceResult result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    pending_.result = std::move(result);
  }
  cv_.notify_all();
}

// ---- Scheduler ----

struct Scheduler::Sequence {
  SequenceRequest request;
  std::shared_ptr<RequestStream> stream;
  int32_t slot = -1;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::unique_ptr<StopMatcher> stop;
  int64_t n_prompt_done = 0;  // prompt tokens already in the KV cache
  int32_t next_token = -1;    // sampled, not yet in the KV cache
  int32_t n_generated = 0;
  bool ended = false;
  SchedulerClock::time_point submitted, admitted, first_token, last_token;

  bool decoding() const { return n_prompt_done == static_cast<int64_t>(request.prompt.size()); }
};

Scheduler::Scheduler(ModelRunner& runner) : runner_(runner), n_vocab_(runner.n_vocab()) {
  const int64_t max_batch = runner_.max_batch_tokens();
  TANDEM_CHECK(max_batch > 0 && runner_.max_sequences() > 0);
  slot_used_.assign(static_cast<size_t>(runner_.max_sequences()), 0);
  batch_tokens_.resize(max_batch);
  batch_positions_.resize(max_batch);
  batch_seqs_.resize(max_batch);
  batch_want_.resize(max_batch);
  batch_owner_.reserve(max_batch);
  running_.reserve(runner_.max_sequences());
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    accepting_ = false;
    abort_ = absl::UnavailableError("the server is shutting down");
  }
  cv_.notify_all();
  thread_.join();
}

absl::StatusOr<std::shared_ptr<RequestStream>> Scheduler::submit(SequenceRequest request) {
  TANDEM_RETURN_IF_ERROR(validate(request, n_vocab_, runner_.context_length()));
  auto seq = std::make_unique<Sequence>();
  seq->submitted = SchedulerClock::now();
  seq->request = std::move(request);
  seq->stream = std::make_shared<RequestStream>();
  std::shared_ptr<RequestStream> stream = seq->stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      return absl::UnavailableError("the server is draining: it takes no new requests");
    }
    if (n_reserved_ >= runner_.max_sequences()) {
      return absl::ResourceExhaustedError(absl::StrCat("all ", runner_.max_sequences(),
                                                       " sequence slots are busy; retry later"));
    }
    ++n_reserved_;
    incoming_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return stream;
}

void Scheduler::stop_accepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

bool Scheduler::wait_idle(SchedulerClock::time_point until) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_until(lock, until, [&] { return n_reserved_ == 0; });
}

void Scheduler::abort_all(const absl::Status& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    abort_ = why;
  }
  cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats s;
  s.active = n_reserved_;
  s.max_sequences = runner_.max_sequences();
  s.requests_total = requests_total_;
  s.tokens_generated_total = tokens_total_;
  s.accepting = accepting_;
  return s;
}

void Scheduler::loop() {
  std::deque<std::unique_ptr<Sequence>> incoming;
  while (true) {
    std::optional<absl::Status> abort;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (running_.empty()) {
        cv_.wait(lock, [&] { return stopping_ || abort_.has_value() || !incoming_.empty(); });
      }
      if (stopping_ && running_.empty() && incoming_.empty() && !abort_) break;
      incoming.swap(incoming_);
      abort = std::exchange(abort_, std::nullopt);
    }
    const auto now = SchedulerClock::now();
    for (auto& s : running_) {
      if (abort) {
        end_sequence(*s, StopReason::kAborted, *abort);
      } else if (s->stream->cancelled()) {
        end_sequence(*s, StopReason::kCancelled, absl::CancelledError("cancelled by the caller"));
      } else if (now >= s->request.deadline) {
        end_sequence(*s, StopReason::kDeadline,
                     absl::DeadlineExceededError("the request's deadline passed"));
      }
    }
    if (abort) {
      for (auto& s : incoming) end_sequence(*s, StopReason::kAborted, *abort);
    }
    retire_ended();
    admit(incoming);
    retire_ended();
    if (running_.empty() || !build_batch()) continue;

    model::Batch batch{std::span(batch_tokens_).first(batch_size_),
                       std::span(batch_positions_).first(batch_size_),
                       std::span(batch_seqs_).first(batch_size_),
                       std::span(batch_want_).first(batch_size_)};
    absl::StatusOr<std::span<const float>> logits = runner_.forward(batch);
    if (!logits.ok()) {
      const absl::Status why = absl::Status(
          logits.status().code(), absl::StrCat("the engine failed: ", logits.status().message()));
      for (auto& s : running_) end_sequence(*s, StopReason::kAborted, why);
    } else {
      sample_outputs(*logits);
    }
    retire_ended();
  }
}

void Scheduler::admit(std::deque<std::unique_ptr<Sequence>>& incoming) {
  while (!incoming.empty()) {
    std::unique_ptr<Sequence> s = std::move(incoming.front());
    incoming.pop_front();
    s->admitted = SchedulerClock::now();
    if (!s->ended && s->stream->cancelled()) {
      end_sequence(*s, StopReason::kCancelled, absl::CancelledError("cancelled by the caller"));
    }
    if (!s->ended) {
      // submit() reserves a slot per request, so one is free.
      const auto free = std::find(slot_used_.begin(), slot_used_.end(), 0);
      TANDEM_CHECK(free != slot_used_.end());
      const int32_t slot = static_cast<int32_t>(free - slot_used_.begin());
      if (absl::Status st = runner_.open_sequence(slot); !st.ok()) {
        end_sequence(*s, StopReason::kAborted, st);
      } else {
        s->slot = slot;
        slot_used_[slot] = 1;
        s->sampler = std::make_unique<Sampler>(s->request.sampling, n_vocab_);
        for (int32_t id : s->request.prompt) s->sampler->accept(id);
        s->decoder = std::make_unique<tokenizer::StreamDecoder>(runner_.tokenizer());
        s->stop = std::make_unique<StopMatcher>(s->request.stop);
        if (s->request.max_tokens == 0) end_sequence(*s, StopReason::kLength, absl::OkStatus());
      }
    }
    running_.push_back(std::move(s));
  }
}

bool Scheduler::build_batch() {
  batch_size_ = 0;
  batch_owner_.clear();
  const int64_t budget = runner_.max_batch_tokens();
  auto add = [&](int32_t token, int64_t pos, int32_t seq, bool want) {
    batch_tokens_[batch_size_] = token;
    batch_positions_[batch_size_] = static_cast<int32_t>(pos);
    batch_seqs_[batch_size_] = seq;
    batch_want_[batch_size_] = want ? 1 : 0;
    ++batch_size_;
  };
  // Decode steps first: one token each keeps every stream moving while long
  // prompts are read in the room that is left.
  for (auto& s : running_) {
    if (s->ended || !s->decoding() || batch_size_ >= budget) continue;
    add(s->next_token, s->n_prompt_done + s->n_generated - 1, s->slot, true);
    batch_owner_.push_back(s.get());
  }
  for (auto& s : running_) {
    if (s->ended || s->decoding() || batch_size_ >= budget) continue;
    const int64_t n_prompt = static_cast<int64_t>(s->request.prompt.size());
    const int64_t n = std::min(budget - batch_size_, n_prompt - s->n_prompt_done);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = s->n_prompt_done + i;
      add(s->request.prompt[pos], pos, s->slot, pos + 1 == n_prompt);
    }
    s->n_prompt_done += n;
    if (s->decoding()) batch_owner_.push_back(s.get());
  }
  return batch_size_ > 0;
}

void Scheduler::sample_outputs(std::span<const float> logits) {
  TANDEM_CHECK(logits.size() == batch_owner_.size() * static_cast<size_t>(n_vocab_));
  for (size_t k = 0; k < batch_owner_.size(); ++k) {
    Sequence& s = *batch_owner_[k];
    const int32_t token = s.sampler->sample(logits.subspan(k * n_vocab_, n_vocab_));
    s.sampler->accept(token);
    s.last_token = SchedulerClock::now();
    if (s.n_generated == 0) s.first_token = s.last_token;
    if (s.request.stop_at_eog && runner_.tokenizer().is_eog(token)) {
      end_sequence(s, StopReason::kEndOfGeneration, absl::OkStatus());
    } else {
      emit_token(s, token);
    }
  }
}

void Scheduler::emit_token(Sequence& s, int32_t token) {
  ++s.n_generated;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++tokens_total_;
  }
  s.stream->append(token, s.stop->push(s.decoder->push(token)));
  if (s.stop->matched()) {
    end_sequence(s, StopReason::kStopString, absl::OkStatus());
  } else if (s.n_generated >= s.request.max_tokens) {
    end_sequence(s, StopReason::kLength, absl::OkStatus());
  } else {
    s.next_token = token;
  }
}

void Scheduler::end_sequence(Sequence& s, StopReason reason, absl::Status status) {
  if (s.ended) return;
  s.ended = true;
  if (reason == StopReason::kEndOfGeneration || reason == StopReason::kLength) {
    // Release the text held back for UTF-8 or a possible stop string; it may
    // still complete a stop string.
    std::string rest = s.stop->push(s.decoder->flush());
    if (s.stop->matched()) {
      reason = StopReason::kStopString;
    } else {
      rest += s.stop->flush();
    }
    s.stream->append_text(rest);
  }
  SequenceResult r;
  r.reason = reason;
  r.status = std::move(status);
  if (reason == StopReason::kStopString) r.stop_string = std::string(s.stop->matched_stop());
  r.prompt_tokens = static_cast<int32_t>(s.request.prompt.size());
  r.completion_tokens = s.n_generated;
  r.queue_seconds = seconds_between(s.submitted, s.admitted);
  if (s.n_generated > 0 || reason == StopReason::kEndOfGeneration) {
    r.prompt_seconds = seconds_between(s.admitted, s.first_token);
    r.decode_seconds = seconds_between(s.first_token, s.last_token);
  }
  s.stream->finish(std::move(r));
}

void Scheduler::retire_ended() {
  int32_t n_retired = 0;
  for (auto& s : running_) {
    if (!s->ended) continue;
    if (s->slot >= 0) {
      // A failure here means the engine lost a rank: the next forward pass
      // reports it to every request, so the slot is simply reused.
      runner_.close_sequence(s->slot).IgnoreError();
      slot_used_[s->slot] = 0;
    }
    s.reset();
    ++n_retired;
  }
  if (n_retired == 0) return;
  std::erase(running_, nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    n_reserved_ -= n_retired;
    requests_total_ += static_cast<uint64_t>(n_retired);
  }
  idle_cv_.notify_all();
}

}  // namespace tandem::engine
