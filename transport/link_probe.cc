#include "transport/link_probe.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace tandem::transport {
namespace {

// Every probe message is small_bytes long and opens with this header; a
// large message follows each kBulk header.
enum class ProbeOp : uint32_t { kEcho = 1, kBulk = 2, kAck = 3, kVerdict = 4 };

struct ProbeHeader {
  uint32_t magic;
  uint32_t op;             // ProbeOp
  uint64_t bytes;          // kBulk: the large message's size
  uint32_t code;           // kVerdict: an absl::StatusCode
  uint32_t message_bytes;  // kVerdict: the message after the header
};
static_assert(sizeof(ProbeHeader) == 24, "the probe header is a wire format");

constexpr uint32_t kProbeMagic = 0x4B4E494C;  // "LINK"
// A peer allocates what rank 0 asks for a large message: bounded.
constexpr uint64_t kMaxLargeBytes = uint64_t{256} << 20;

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

class Prober {
 public:
  Prober(Communicator& comm, const LinkProbeOptions& options)
      : comm_(comm),
        options_(options),
        out_(std::max(options.small_bytes, sizeof(ProbeHeader) + 64)),
        in_(out_.size()) {}

  absl::Status send_header(int peer, const ProbeHeader& h, std::string_view message,
                           Deadline deadline) {
    std::memcpy(out_.data(), &h, sizeof(h));
    if (!message.empty()) {  // an empty view's data() may be null
      std::memcpy(out_.data() + sizeof(h), message.data(), message.size());
    }
    return comm_.send(out_.data(), out_.size(), peer, kLinkProbeTag, deadline);
  }

  // Receives one probe message into in_ and checks its header.
  absl::StatusOr<ProbeHeader> recv_header(int peer, Deadline deadline) {
    TANDEM_RETURN_IF_ERROR(comm_.recv(in_.data(), in_.size(), peer, kLinkProbeTag, deadline));
    ProbeHeader h;
    std::memcpy(&h, in_.data(), sizeof(h));
    if (h.magic != kProbeMagic || h.op < 1 || h.op > 4) {
      return absl::DataLossError(absl::StrCat("link check: rank ", peer,
                                              " sent a message that is not a link probe"));
    }
    if (h.message_bytes > in_.size() - sizeof(h)) {
      return absl::DataLossError(
          absl::StrCat("link check: rank ", peer, "'s verdict is longer than its message"));
    }
    return h;
  }

  Deadline op_deadline() const { return deadline_in(options_.timeout); }

  absl::StatusOr<LinkMeasurement> measure(int peer, Clock::time_point until) {
    LinkMeasurement m;
    m.rank_a = comm_.rank();
    m.rank_b = peer;
    m.backend = std::string(comm_.backend());
    m.path = comm_.link_path(peer);
    m.small_bytes = out_.size();
    const auto start = Clock::now();
    const auto half = start + (until - start) / 2;
    std::vector<double> round_trips;
    const ProbeHeader echo{kProbeMagic, static_cast<uint32_t>(ProbeOp::kEcho), 0, 0, 0};
    std::memcpy(out_.data(), &echo, sizeof(echo));
    while (static_cast<int>(round_trips.size()) < options_.max_round_trips &&
           (static_cast<int>(round_trips.size()) < options_.min_round_trips ||
            Clock::now() < half)) {
      const Deadline deadline = op_deadline();
      const auto t0 = Clock::now();
      TANDEM_ASSIGN_OR_RETURN(auto r, comm_.irecv(in_.data(), in_.size(), peer, kLinkProbeTag));
      TANDEM_RETURN_IF_ERROR(comm_.send(out_.data(), out_.size(), peer, kLinkProbeTag, deadline));
      TANDEM_RETURN_IF_ERROR(r->wait(deadline));
      round_trips.push_back(micros(Clock::now() - t0));
      if (std::memcmp(in_.data(), out_.data(), sizeof(echo)) != 0) {
        return absl::DataLossError(absl::StrCat("link check: rank ", peer, " echoed other bytes"));
      }
    }
    std::nth_element(round_trips.begin(), round_trips.begin() + round_trips.size() / 2,
                     round_trips.end());
    m.round_trips = static_cast<int>(round_trips.size());
    m.round_trip_us = round_trips[round_trips.size() / 2];

    large_.resize(options_.large_bytes);
    m.large_bytes = large_.size();
    const ProbeHeader bulk{kProbeMagic, static_cast<uint32_t>(ProbeOp::kBulk), large_.size(), 0,
                           0};
    double best = 0;
    while (m.large_messages < options_.max_large_messages &&
           (m.large_messages == 0 || Clock::now() < until)) {
      const Deadline deadline = op_deadline();
      const auto t0 = Clock::now();
      TANDEM_RETURN_IF_ERROR(send_header(peer, bulk, {}, deadline));
      TANDEM_RETURN_IF_ERROR(comm_.send(large_.data(), large_.size(), peer, kLinkProbeTag,
                                        deadline));
      TANDEM_ASSIGN_OR_RETURN(ProbeHeader ack, recv_header(peer, deadline));
      // The ack's own trip is not the large message's: take off half a round trip.
      const double us = std::max(1.0, micros(Clock::now() - t0) - m.round_trip_us / 2);
      if (ack.op != static_cast<uint32_t>(ProbeOp::kAck)) {
        return absl::DataLossError(absl::StrCat("link check: rank ", peer, " did not ack"));
      }
      best = std::max(best, static_cast<double>(large_.size()) / us / 1e3);
      ++m.large_messages;
    }
    m.bandwidth_gbps = best;
    return m;
  }

  // A peer's side: answers rank 0 until its verdict.
  absl::Status answer() {
    while (true) {
      TANDEM_ASSIGN_OR_RETURN(ProbeHeader h, recv_header(0, op_deadline()));
      switch (static_cast<ProbeOp>(h.op)) {
        case ProbeOp::kEcho:
          TANDEM_RETURN_IF_ERROR(
              comm_.send(in_.data(), in_.size(), 0, kLinkProbeTag, op_deadline()));
          break;
        case ProbeOp::kBulk: {
          if (h.bytes == 0 || h.bytes > kMaxLargeBytes) {
            return absl::DataLossError(
                absl::StrCat("link check: rank 0 asked for a large message of ", h.bytes,
                             " bytes (at most ", kMaxLargeBytes, ")"));
          }
          large_.resize(h.bytes);
          TANDEM_RETURN_IF_ERROR(
              comm_.recv(large_.data(), large_.size(), 0, kLinkProbeTag, op_deadline()));
          const ProbeHeader ack{kProbeMagic, static_cast<uint32_t>(ProbeOp::kAck), 0, 0, 0};
          TANDEM_RETURN_IF_ERROR(send_header(0, ack, {}, op_deadline()));
          break;
        }
        case ProbeOp::kVerdict: {
          const auto code = static_cast<absl::StatusCode>(h.code);
          const std::string message(reinterpret_cast<const char*>(in_.data()) + sizeof(h),
                                    h.message_bytes);
          if (code == absl::StatusCode::kOk) return absl::OkStatus();
          if (h.code > 16) return absl::UnknownError(message);
          return absl::Status(code, message);
        }
        case ProbeOp::kAck:
          return absl::DataLossError("link check: rank 0 sent an ack out of turn");
      }
    }
  }

  // Rank 0 tells every peer how it ends. After a failure a peer may be dead:
  // then briefly, and a failed send changes nothing.
  absl::Status send_verdict(const absl::Status& verdict) {
    const size_t room = out_.size() - sizeof(ProbeHeader);
    const std::string text = std::string(verdict.message()).substr(0, room);
    const ProbeHeader h{kProbeMagic, static_cast<uint32_t>(ProbeOp::kVerdict), 0,
                        static_cast<uint32_t>(verdict.code()),
                        static_cast<uint32_t>(text.size())};
    const Deadline deadline =
        verdict.ok() ? op_deadline()
                     : deadline_in(std::min(options_.timeout, std::chrono::milliseconds(2000)));
    absl::Status first;
    for (int p = 1; p < comm_.size(); ++p) {
      absl::Status s = send_header(p, h, text, deadline);
      if (first.ok()) first = s;
    }
    return verdict.ok() ? first : absl::OkStatus();
  }

 private:
  Communicator& comm_;
  const LinkProbeOptions options_;
  std::vector<uint8_t> out_, in_, large_;
};

}  // namespace

absl::StatusOr<std::vector<LinkMeasurement>> probe_links(Communicator& comm,
                                                         const LinkProbeOptions& options,
                                                         const LinkJudge& judge, bool measure) {
  Prober prober(comm, options);
  if (comm.rank() != 0) {
    TANDEM_RETURN_IF_ERROR(prober.answer());
    return std::vector<LinkMeasurement>{};
  }
  std::vector<LinkMeasurement> links;
  absl::Status verdict;
  if (measure && comm.size() > 1) {
    const auto share = options.budget / (comm.size() - 1);
    for (int p = 1; p < comm.size() && verdict.ok(); ++p) {
      absl::StatusOr<LinkMeasurement> m = prober.measure(p, Clock::now() + share);
      if (m.ok()) {
        links.push_back(std::move(*m));
      } else {
        verdict = absl::Status(m.status().code(), absl::StrCat("link check: rank 0 <-> ", p, ": ",
                                                               m.status().message()));
      }
    }
  }
  if (verdict.ok() && judge) verdict = judge(links);
  TANDEM_RETURN_IF_ERROR(prober.send_verdict(verdict));
  if (!verdict.ok()) return verdict;
  return links;
}

std::string describe_link(const LinkMeasurement& m) {
  std::string size = m.small_bytes % 1024 == 0 ? absl::StrCat(m.small_bytes / 1024, " KiB")
                                               : absl::StrCat(m.small_bytes, " B");
  return absl::StrFormat("link rank %d <-> %d: %s%s%s, %s round trip %.0f us, %.2f GB/s",
                         m.rank_a, m.rank_b, m.backend, m.path.empty() ? "" : " ", m.path, size,
                         m.round_trip_us, m.bandwidth_gbps);
}

}  // namespace tandem::transport
