// The cross-process row: a Channel between two processes through the real
// `cellink daemon`, each attached with a HostDevice, exactly as
// examples/ping-pong runs. The bench starts the daemon once (a private
// runtime directory, one link per payload size with rings sized by
// output_section_for()), and for each mode and size a peer process of
// itself, `cellink_bench --peer daemon-echo`, pinned to the second CPU: it
// echoes the round trips, then streams the throughput messages. The bench
// side (cell "a") measures on a thread pinned to the first CPU.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "../channel_sides.hpp"
#include "../round_trips.hpp"
#include "../streaming.hpp"
#include "cellink/linux-uio/session.hpp"
#include "channel_modes.hpp"
#include "peer_process.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

using linux_uio::Channel;
using linux_uio::Session;
using Clock = std::chrono::steady_clock;

constexpr const char* kId = "cellink-daemon";
constexpr std::chrono::seconds kStartTimeout{10};
constexpr std::chrono::seconds kPeerTimeout{60};

// The daemon, started on first use and stopped by stop_daemon().
struct Daemon {
  std::unique_ptr<Child> process;
  std::string runtime_dir;
  std::string log_file;
  std::string error;  // why it could not start; empty once running
  bool tried = false;
};

Daemon& daemon_state() {
  static Daemon daemon;
  return daemon;
}

[[nodiscard]] std::string link_name(std::uint64_t payload) {
  return "bench-" + std::to_string(payload);
}

[[nodiscard]] std::string config_text(const Preset& preset) {
  std::string text = "[[cell]]\nname = \"a\"\n\n[[cell]]\nname = \"b\"\n";
  for (const std::uint64_t payload : preset.sizes) {
    text += "\n[[link]]\nname = \"" + link_name(payload) +
            "\"\ncells = [\"a\", \"b\"]\noutput_section = \"" +
            std::to_string(output_section_for(payload) / 1024) + "KiB\"\nvectors = 2\n";
  }
  return text;
}

// Starts `cellink daemon` once; false (with daemon_state().error) when it
// cannot run.
bool ensure_daemon(const Context& context) {
  Daemon& daemon = daemon_state();
  if (daemon.tried) return daemon.error.empty();
  daemon.tried = true;
  if (::access(context.cellink_cli.c_str(), X_OK) != 0) {
    daemon.error = "the cellink CLI is not at " + context.cellink_cli +
                   " (build the target cellink, or set CELLINK_CLI)";
    return false;
  }
  daemon.runtime_dir = context.work_dir + "/daemon";
  daemon.log_file = context.work_dir + "/daemon.log";
  const std::string config = context.work_dir + "/cells.toml";
  std::ofstream(config) << config_text(*context.preset);
  ::mkdir(daemon.runtime_dir.c_str(), 0700);
  // SIGTERM, also from the kernel if the bench dies: the daemon then
  // removes its sockets.
  const std::string control_socket = daemon.runtime_dir + "/control.sock";
  daemon.process = start_service(
      {{context.cellink_cli, "daemon", "--config", config, "--runtime-dir", daemon.runtime_dir,
        "--log-level", "warn"},
       SIGTERM,
       daemon.log_file,
       -1},
      "cellink daemon", [&] { return std::filesystem::exists(control_socket); }, daemon.error);
  return daemon.process != nullptr;
}

[[nodiscard]] linux_uio::HostDeviceOptions device_options(const std::string& runtime_dir,
                                                          const std::string& link,
                                                          const char* cell) {
  linux_uio::HostDeviceOptions options;
  options.runtime_dir = runtime_dir;
  options.link = link;
  options.cell = cell;
  return options;
}

// Attaches, retrying while the daemon is still coming up, and connects
// channel "bench".
[[nodiscard]] std::unique_ptr<Session> attach(const linux_uio::HostDeviceOptions& device,
                                              Mode mode) {
  linux_uio::SessionOptions options;
  options.spin_budget = spin_budget(mode);
  const Clock::time_point deadline = Clock::now() + kStartTimeout;
  for (;;) {
    try {
      return Session::connect(device, options);
    } catch (const std::exception& error) {
      if (Clock::now() >= deadline) {
        fail("attaching to link '%s' as cell '%s': %s", device.link.c_str(), device.cell.c_str(),
             error.what());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

void connect_channel(Channel& channel, const std::string& link) {
  if (const std::error_code error = channel.wait_connected(kStartTimeout)) {
    fail("channel 'bench' on link '%s' did not connect: %s", link.c_str(), error.message().c_str());
  }
}

[[nodiscard]] std::vector<Result> measure(const Context& context, Mode mode,
                                          std::uint64_t payload) {
  const Daemon& daemon = daemon_state();
  const Settings rtt = context.rtt_settings(mode, payload);
  const StreamCase stream = context.stream_case(payload);
  PeerArgs args = PeerArgs::for_row("daemon-echo", name(mode), payload, rtt, stream);
  args.cpu = context.settings.cpus.pinned ? context.settings.cpus.second : -1;
  args.runtime_dir = daemon.runtime_dir;
  args.link = link_name(payload);
  Child peer({args.argv(context.self_path), SIGKILL, "", -1});

  std::unique_ptr<Session> session =
      attach(device_options(daemon.runtime_dir, args.link, "a"), mode);
  Channel channel = session->open("bench");
  connect_channel(channel, args.link);
  RawSide side(channel, static_cast<std::uint32_t>(payload), SendWith::send, receive_with(mode));
  Latency latency;
  StreamTicks stream_ticks;
  std::uint64_t stream_switches = 0;
  const std::uint64_t switches = involuntary_switches();
  // A thread of its own, so that the main thread (which forks) stays unpinned.
  std::thread measuring([&] {
    if (context.settings.cpus.pinned) pin_this_thread(context.settings.cpus.first);
    auto initiate = [&](std::uint64_t i) {
      side.send(i);
      side.receive(i);
    };
    latency = summarize(time_initiator(rtt, initiate), context.settings.clock);
    latency.switches = involuntary_switches() - switches;
    stream_switches = involuntary_switches();
    auto consume = [&](std::uint64_t i) { side.receive(i); };
    stream_ticks = time_consumer(stream, consume);
    stream_switches = involuntary_switches() - stream_switches;
  });
  measuring.join();
  keep(side.sink());
  channel.close();
  session.reset();  // leaves the link: the peer sees it and exits
  int status = 0;
  if (!peer.wait_exit(kPeerTimeout, status) || status != 0) {
    fail("the daemon-echo peer (%s, %s) failed: %s", name(mode), size_label(payload).c_str(),
         describe_exit(status).c_str());
  }
  return {rtt_result(kId, mode, payload, latency, rtt),
          throughput_result(kId, mode, payload, stream_ticks.rate(context.settings, stream), stream,
                            stream_switches)};
}

}  // namespace

Runner daemon_runner() {
  Runner runner;
  runner.transport = {kId,
                      "cellink channel via daemon",
                      Role::cellink,
                      {Mode::poll, Mode::block, Mode::adaptive},
                      "as cellink channel, but between two processes attached through `cellink "
                      "daemon` with HostDevice (the peer process pinned with sched_setaffinity)",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    if (!ensure_daemon(context)) {
      const std::string& why = daemon_state().error;
      return std::vector<Result>{
          unavailable(kId, mode, Measure::rtt, payload, Status::not_applicable, why),
          unavailable(kId, mode, Measure::throughput, payload, Status::not_applicable, why)};
    }
    return measure(context, mode, payload);
  };
  return runner;
}

void stop_daemon() {
  Daemon& daemon = daemon_state();
  if (!daemon.process) return;
  const int status = daemon.process->stop(std::chrono::seconds(5));
  daemon.process.reset();
  if (status != 0) {
    std::fprintf(stderr, "cellink_bench: cellink daemon stopped with %s\n",
                 describe_exit(status).c_str());
  }
}

int daemon_peer_main(const PeerArgs& args) {
  const std::optional<Mode> mode = mode_named(args.mode);
  if (!mode) fail("peer: unknown mode '%s'", args.mode.c_str());
  pin_this_thread(args.cpu);
  std::unique_ptr<Session> session =
      attach(device_options(args.runtime_dir, args.link, "b"), *mode);
  Channel channel = session->open("bench");
  connect_channel(channel, args.link);
  RawSide side(channel, static_cast<std::uint32_t>(args.size), SendWith::send, receive_with(*mode));
  const RoundTripPlan plan(args.settings());
  for (std::uint64_t i = 0; i < plan.total; ++i) {
    side.receive(i);
    side.send(i);
  }
  for (std::uint64_t i = 0; i < args.stream_records; ++i) side.send(i);
  // The bench closes the channel and leaves once it has every message.
  for (;;) {
    const linux_uio::Message message = channel.receive(kPeerTimeout);
    if (message) fail("peer: an unexpected message after the stream");
    if (message.error() == linux_uio::MessageErrc::channel_closed ||
        message.error() == linux_uio::MessageErrc::peer_reset) {
      break;
    }
    fail("peer: waiting for the bench to leave: %s", message.error().message().c_str());
  }
  keep(side.sink());
  return 0;
}

}  // namespace cellink::bench::suite
