// iceoryx (eclipse-iceoryx 2.0, Debian's iceoryx and libiceoryx-posh-dev):
// zero-copy publish/subscribe between two processes through RouDi, polling.
// The bench starts its own iox-roudi (monitoring off, mempools sized for
// the run's payloads) and, per payload size, two peer processes of itself:
// `--peer iceoryx-ping` (pinned to the first CPU) times the round trips and
// consumes the stream, `--peer iceoryx-pong` (second CPU) echoes and
// produces; the ping sends its figures back through a pipe. Both sides loan
// a chunk, fill the whole payload, publish; the receiver take()s, reads one
// word per 64 bytes, checks the sequence number and releases. Queues block
// the publisher instead of dropping (WAIT_FOR_CONSUMER, BLOCK_PRODUCER), so
// a lost message is a bug, and aborts the peer.
//
// Built only when CMake finds iceoryx_posh; otherwise every row says
// "not installed".
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <thread>

#include "../round_trips.hpp"
#include "../streaming.hpp"
#include "peer_process.hpp"
#include "suite.hpp"

#if CELLINK_BENCH_HAVE_ICEORYX
#include <iceoryx_hoofs/log/logmanager.hpp>
#include <iceoryx_posh/popo/untyped_publisher.hpp>
#include <iceoryx_posh/popo/untyped_subscriber.hpp>
#include <iceoryx_posh/runtime/posh_runtime.hpp>
#include <iceoryx_versions.hpp>
#endif

namespace cellink::bench::suite {
namespace {

constexpr const char* kId = "iceoryx";
#if CELLINK_BENCH_ICEORYX_DISABLED
constexpr const char* kInstallHint = "disabled at configure time (-DCELLINK_BENCH_ICEORYX=OFF)";
#else
constexpr const char* kInstallHint = "not installed (apt-get install iceoryx libiceoryx-posh-dev)";
#endif

#if CELLINK_BENCH_HAVE_ICEORYX

using Clock = std::chrono::steady_clock;
constexpr std::chrono::seconds kStartTimeout{10};
constexpr std::chrono::seconds kPeerTimeout{120};
// Chunks a subscriber may queue; the mempools hold more than both queues.
constexpr std::uint64_t kQueueCapacity = 16;

struct Roudi {
  std::unique_ptr<Child> process;
  std::string log_file;
  std::string error;
  bool tried = false;
};

Roudi& roudi_state() {
  static Roudi roudi;
  return roudi;
}

[[nodiscard]] std::string find_roudi() {
  if (const char* path = std::getenv("CELLINK_IOX_ROUDI"); path != nullptr && *path != '\0') {
    return path;
  }
  return find_program("iox-roudi");
}

// One mempool per payload size, with room for the chunk header.
[[nodiscard]] std::string roudi_config(const Preset& preset) {
  std::string text = "[general]\nversion = 1\n\n[[segment]]\n";
  std::uint64_t previous = 0;
  for (const std::uint64_t payload : preset.sizes) {
    const std::uint64_t chunk = (payload + 256 + 255) / 256 * 256;
    if (chunk == previous) continue;
    previous = chunk;
    const std::uint64_t count = payload >= 256 * 1024 ? 40 : 256;
    text += "\n[[segment.mempool]]\nsize = " + std::to_string(chunk) +
            "\ncount = " + std::to_string(count) + "\n";
  }
  return text;
}

bool ensure_roudi(const Context& context) {
  Roudi& roudi = roudi_state();
  if (roudi.tried) return roudi.error.empty();
  roudi.tried = true;
  const std::string program = find_roudi();
  if (program.empty()) {
    roudi.error = "iox-roudi not found in PATH (apt-get install iceoryx)";
    return false;
  }
  const std::string config = context.work_dir + "/roudi.toml";
  std::ofstream(config) << roudi_config(*context.preset);
  roudi.log_file = context.work_dir + "/roudi.log";
  // Monitoring off: the pinned peers spin on both CPUs and may starve a
  // keep-alive thread, which RouDi would take for a dead process. Kill
  // delay 1 s: on SIGTERM RouDi waits that long for its (dead) clients
  // before it removes its shared memory.
  roudi.process = start_service(
      {{program, "-c", config, "-m", "off", "-k", "1", "-l", "info"}, SIGTERM, roudi.log_file, -1},
      "iox-roudi (is another RouDi running?)",
      [&] {
        return file_tail(roudi.log_file, 4096).find("RouDi is ready for clients") !=
               std::string::npos;
      },
      roudi.error);
  return roudi.process != nullptr;
}

[[nodiscard]] std::vector<Result> measure(const Context& context, Mode mode,
                                          std::uint64_t payload) {
  const Settings rtt = context.rtt_settings(mode, payload);
  const StreamCase stream = context.stream_case(payload);
  PeerArgs args = PeerArgs::for_row("iceoryx-pong", name(mode), payload, rtt, stream);
  args.link = "size" + std::to_string(payload);  // the service instance
  const bool pinned = context.settings.cpus.pinned;
  // iceoryx 2.0 puts each runtime's socket and lock in /tmp; a peer killed
  // with us cannot remove them.
  for (const char* path :
       {"/tmp/cellink-bench-iceoryx-ping", "/tmp/cellink-bench-iceoryx-ping.lock",
        "/tmp/cellink-bench-iceoryx-pong", "/tmp/cellink-bench-iceoryx-pong.lock"}) {
    add_cleanup_path(path);
  }
  ResultPipe pipe;
  args.cpu = pinned ? context.settings.cpus.second : -1;
  Child pong({args.argv(context.self_path), SIGKILL, "", -1});
  args.kind = "iceoryx-ping";
  args.cpu = pinned ? context.settings.cpus.first : -1;
  Child ping({args.argv(context.self_path), SIGKILL, "", pipe.write_end()});
  pipe.close_write_end();

  auto report = std::make_unique<PeerReport>();
  std::string error;
  const bool reported = pipe.read(*report, kPeerTimeout, error);
  int ping_status = 0;
  int pong_status = 0;
  const bool ping_done = ping.wait_exit(std::chrono::seconds(10), ping_status);
  const bool pong_done = pong.wait_exit(std::chrono::seconds(10), pong_status);
  if (!reported || !ping_done || !pong_done || ping_status != 0 || pong_status != 0) {
    if (error.empty()) error = "the peers did not exit cleanly";
    fail("iceoryx %s: %s (ping %s, pong %s); see the peers' messages above",
         size_label(payload).c_str(), error.c_str(),
         ping_done ? describe_exit(ping_status).c_str() : "running",
         pong_done ? describe_exit(pong_status).c_str() : "running");
  }
  InitiatorTicks ticks;
  *ticks.histogram = report->histogram;
  ticks.median_block = report->median_block;
  Latency latency = summarize(ticks, context.settings.clock);
  const double rate =
      StreamTicks{report->stream_begin, report->stream_end}.rate(context.settings, stream);
  Result round_trip = rtt_result(kId, mode, payload, latency, rtt);
  round_trip.note = "two processes; ctxsw not counted";
  Result streaming = throughput_result(kId, mode, payload, rate, stream, 0);
  streaming.note = round_trip.note;
  return {round_trip, streaming};
}

// ---- The peers ------------------------------------------------------------------

// One process's ends: it publishes on `out` and subscribes to `in`.
class Endpoint {
 public:
  Endpoint(const std::string& instance, const char* out, const char* in, std::uint64_t size)
      : size_(size),
        publisher_(service(instance, out), publisher_options()),
        subscriber_(service(instance, in), subscriber_options()) {}

  // Waits until our publisher has the peer's subscriber and ours is
  // subscribed to the peer's publisher: a chunk published earlier would be
  // lost (no history).
  void wait_connected() {
    const Clock::time_point deadline = Clock::now() + kStartTimeout;
    while (!publisher_.hasSubscribers() ||
           subscriber_.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
      if (Clock::now() >= deadline) fail("iceoryx peer: the other side did not connect in 10 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  void send(std::uint64_t sequence) {
    for (;;) {
      auto chunk = publisher_.loan(static_cast<std::uint32_t>(size_));
      if (chunk.has_error()) continue;  // the pool is drained until the peer releases
      write_payload(static_cast<std::byte*>(chunk.value()), size_, sequence, Workload::fill);
      publisher_.publish(chunk.value());
      return;
    }
  }

  void receive(std::uint64_t sequence) {
    for (;;) {
      auto chunk = subscriber_.take();
      if (chunk.has_error()) continue;
      const std::uint64_t got =
          read_payload(static_cast<const std::byte*>(chunk.value()), size_, Workload::fill, sink_);
      subscriber_.release(chunk.value());
      if (got != sequence) {
        fail("iceoryx: message %llu arrived where %llu was expected",
             static_cast<unsigned long long>(got), static_cast<unsigned long long>(sequence));
      }
      return;
    }
  }
  [[nodiscard]] std::uint64_t sink() const noexcept { return sink_; }

 private:
  [[nodiscard]] static iox::capro::ServiceDescription service(const std::string& instance,
                                                              const char* event) {
    return {"CellinkBench", iox::capro::IdString_t(iox::cxx::TruncateToCapacity, instance),
            iox::capro::IdString_t(iox::cxx::TruncateToCapacity, event)};
  }
  [[nodiscard]] static iox::popo::PublisherOptions publisher_options() {
    iox::popo::PublisherOptions options;
    options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
    return options;
  }
  [[nodiscard]] static iox::popo::SubscriberOptions subscriber_options() {
    iox::popo::SubscriberOptions options;
    options.queueCapacity = kQueueCapacity;
    options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
    return options;
  }

  std::uint64_t size_;
  iox::popo::UntypedPublisher publisher_;
  iox::popo::UntypedSubscriber subscriber_;
  std::uint64_t sink_ = 0;
};

#endif

}  // namespace

Runner iceoryx_runner() {
  Runner runner;
  runner.transport = {
    kId,
    "iceoryx",
    Role::baseline,
    {Mode::poll},
    "iceoryx zero-copy publish/subscribe between two processes through "
    "RouDi: loan, fill, publish; take, read, release (polling)",
#if CELLINK_BENCH_HAVE_ICEORYX
    true,
    std::string("iceoryx ") + ICEORYX_LATEST_RELEASE_VERSION
  };
#else
    false,
    kInstallHint
  };
#endif
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
#if CELLINK_BENCH_HAVE_ICEORYX
    if (ensure_roudi(context)) return measure(context, mode, payload);
    const std::string why = roudi_state().error;
    const Status status = Status::not_applicable;
#else
    (void)context;
    const std::string why = kInstallHint;
    const Status status = Status::not_installed;
#endif
    return std::vector<Result>{unavailable(kId, mode, Measure::rtt, payload, status, why),
                               unavailable(kId, mode, Measure::throughput, payload, status, why)};
  };
  return runner;
}

void stop_iceoryx() {
#if CELLINK_BENCH_HAVE_ICEORYX
  Roudi& roudi = roudi_state();
  if (roudi.process) (void)roudi.process->stop(std::chrono::seconds(10));
  roudi.process.reset();
#endif
}

int iceoryx_peer_main(const PeerArgs& args) {
#if CELLINK_BENCH_HAVE_ICEORYX
  pin_this_thread(args.cpu);
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  const bool ping = args.kind == "iceoryx-ping";
  // No pid in the name: a runtime of a killed run leaves its socket, which
  // the next run's (or the bench's signal handler) replaces.
  const std::string runtime = "cellink-bench-" + args.kind;
  iox::runtime::PoshRuntime::initRuntime(
      iox::RuntimeName_t(iox::cxx::TruncateToCapacity, runtime.c_str()));
  Endpoint endpoint(args.link, ping ? "AtoB" : "BtoA", ping ? "BtoA" : "AtoB", args.size);
  endpoint.wait_connected();
  const Settings settings = args.settings();
  if (!ping) {
    const RoundTripPlan plan(settings);
    for (std::uint64_t i = 0; i < plan.total; ++i) {
      endpoint.receive(i);
      endpoint.send(i);
    }
    for (std::uint64_t i = 0; i < args.stream_records; ++i) endpoint.send(i);
    endpoint.receive(args.stream_records);  // the ping's acknowledgement: all consumed
    return 0;
  }
  auto report = std::make_unique<PeerReport>();
  auto initiate = [&](std::uint64_t i) {
    endpoint.send(i);
    endpoint.receive(i);
  };
  const InitiatorTicks ticks = time_initiator(settings, initiate);
  report->histogram = *ticks.histogram;
  report->median_block = ticks.median_block;
  StreamCase stream;
  stream.records = args.stream_records;
  stream.warmup = args.stream_warmup;
  auto consume = [&](std::uint64_t i) { endpoint.receive(i); };
  const StreamTicks stream_ticks = time_consumer(stream, consume);
  report->stream_begin = stream_ticks.begin;
  report->stream_end = stream_ticks.end;
  endpoint.send(args.stream_records);
  keep(endpoint.sink());
  send_report(*report);
  return 0;
#else
  (void)args;
  fail("peer: built without iceoryx");
#endif
}

}  // namespace cellink::bench::suite
