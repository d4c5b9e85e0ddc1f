// The inmate rows: a Channel between this process and a bare-metal cell,
// examples/inmate-echo booted in qemu-system-x86_64 under TCG (software
// emulation: QEMU has no KVM here), on a link of a private `cellink daemon`.
// The inmate's side runs on an emulated CPU, so a figure is the emulator's,
// not the hardware's; the rows show what an inmate costs under the QEMU the
// tests use, and that the bench drives one like any other cell.
//
// Each row (poll, block; 64 B only) starts its own daemon with a host +
// inmate link, boots the inmate with the machine `cellink qemu-args --inmate`
// prints (poll=1 on its command line for the poll row: it spins on the rings
// and never halts), waits for its ready line on QEMU's stdout, attaches as
// cell "host" and times round trips on a thread pinned to the first CPU;
// QEMU is pinned to the second. Then it stops QEMU and the daemon. The rows
// run only when --only names the transport: they need QEMU, boot a machine
// each, and say nothing about hardware.
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "../channel_sides.hpp"
#include "../round_trips.hpp"
#include "cellink/linux-uio/session.hpp"
#include "channel_modes.hpp"
#include "peer_process.hpp"
#include "suite.hpp"

#ifndef CELLINK_INMATE_DIR
#define CELLINK_INMATE_DIR "inmates"
#endif

namespace cellink::bench::suite {
namespace {

using linux_uio::Channel;
using linux_uio::Session;
using Clock = std::chrono::steady_clock;

constexpr const char* kId = "cellink-inmate";
constexpr const char* kQemu = "qemu-system-x86_64";
constexpr std::uint64_t kPayload = 64;
// TCG boots the inmate to its ready line in well under a second on an idle
// machine; a loaded one gets the tests' minute.
constexpr std::chrono::seconds kBootTimeout{60};
// An emulated round trip costs microseconds polling and up to the inmate's
// 10 ms tick blocking: a few thousand give a p99 in seconds, where the
// preset's 2e5 would take minutes.
constexpr std::uint64_t kMaxPollRoundTrips = 5000;
constexpr std::uint64_t kMaxBlockRoundTrips = 2000;

// CELLINK_INMATE_DIR in the environment overrides the build's directory.
[[nodiscard]] std::filesystem::path inmate_elf() {
  const char* dir = std::getenv("CELLINK_INMATE_DIR");
  return std::filesystem::path(dir != nullptr && *dir != '\0' ? dir : CELLINK_INMATE_DIR) /
         "inmate-echo.elf";
}

// Why the rows cannot run here; empty when QEMU and the ELF are there.
[[nodiscard]] std::string missing_reason() {
  if (find_program(kQemu).empty()) {
    return std::string(kQemu) + " is not in PATH (apt-get install qemu-system-x86)";
  }
  if (!std::filesystem::exists(inmate_elf())) {
    return "no inmate image " + inmate_elf().string() + " (build the target inmate-echo)";
  }
  return {};
}

[[nodiscard]] std::string read_file(const std::string& path) {
  std::ifstream file(path);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

// The link's output section is output_section_for(64), as the daemon row's.
[[nodiscard]] std::string config_text() {
  return "[[cell]]\nname = \"host\"\n\n[[cell]]\nname = \"inmate\"\n\n[[link]]\nname = "
         "\"bench-inmate\"\ncells = [\"host\", \"inmate\"]\nrw_section = \"0\"\noutput_section = "
         "\"" +
         std::to_string(output_section_for(kPayload) / 1024) +
         "KiB\"\nvectors = 2\nprotocol = \"cellink\"\n";
}

// Runs `argv` to its end and returns its stdout and stderr; throws unless
// it exits with 0 within 10 s.
[[nodiscard]] std::string run_to_end(const std::vector<std::string>& argv,
                                     const std::string& log_file) {
  Child child({argv, SIGKILL, log_file, -1});
  int status = 0;
  if (!child.wait_exit(std::chrono::seconds(10), status)) {
    throw std::runtime_error(argv[0] + " " + argv[1] + " did not finish within 10 s");
  }
  if (status != 0) {
    throw std::runtime_error(argv[0] + " " + argv[1] + ": " + describe_exit(status) + ": " +
                             file_tail(log_file, 400));
  }
  return read_file(log_file);
}

// Starts QEMU with this thread's CPU mask narrowed to `cpu` for the fork,
// so that every QEMU thread inherits it; the mask is restored after.
[[nodiscard]] std::unique_ptr<Child> start_pinned(const ChildSpec& spec, int cpu) {
  cpu_set_t before;
  if (cpu >= 0 && ::sched_getaffinity(0, sizeof before, &before) != 0) {
    throw std::runtime_error(std::string("sched_getaffinity: ") + std::strerror(errno));
  }
  pin_this_thread(cpu);
  auto child = std::make_unique<Child>(spec);
  if (cpu >= 0 && ::sched_setaffinity(0, sizeof before, &before) != 0) {
    fail("restoring the CPU mask after starting QEMU: %s", std::strerror(errno));
  }
  return child;
}

// Waits for the inmate's ready line in its console; returns the seconds
// since QEMU started. Throws with the console when QEMU exits first or
// the line does not come.
double await_ready(Child& qemu, const std::string& console, Clock::time_point started) {
  const Clock::time_point deadline = started + kBootTimeout;
  for (;;) {
    if (read_file(console).find("echo: ready: ") != std::string::npos) {
      return std::chrono::duration<double>(Clock::now() - started).count();
    }
    int status = 0;
    if (qemu.wait_exit(std::chrono::milliseconds(5), status)) {
      throw std::runtime_error("QEMU exited (" + describe_exit(status) +
                               ") before the inmate was ready: " + file_tail(console, 400));
    }
    if (Clock::now() >= deadline) {
      throw std::runtime_error("the inmate printed no ready line within 60 s: " +
                               file_tail(console, 400));
    }
  }
}

[[nodiscard]] std::vector<Result> measure(const Context& context, Mode mode,
                                          std::uint64_t payload) {
  const std::string dir = context.work_dir + "/inmate-" + name(mode);
  const std::string runtime_dir = dir + "/run";
  const std::string config = dir + "/cells.toml";
  ::mkdir(dir.c_str(), 0700);
  ::mkdir(runtime_dir.c_str(), 0700);
  std::ofstream(config) << config_text();

  std::string error;
  const std::string control_socket = runtime_dir + "/control.sock";
  const std::unique_ptr<Child> daemon = start_service(
      {{context.cellink_cli, "daemon", "--config", config, "--runtime-dir", runtime_dir,
        "--log-level", "warn"},
       SIGTERM,
       dir + "/daemon.log",
       -1},
      "cellink daemon", [&] { return std::filesystem::exists(control_socket); }, error);
  if (!daemon) throw std::runtime_error(error);

  std::vector<std::string> argv = {find_program(kQemu)};
  std::istringstream words(
      run_to_end({context.cellink_cli, "qemu-args", "inmate", "--config", config, "--runtime-dir",
                  runtime_dir, "--inmate", inmate_elf().string()},
                 dir + "/qemu-args.txt"));
  for (std::string word; words >> word;) argv.push_back(word);
  if (mode == Mode::poll) argv.insert(argv.end(), {"-append", "poll=1"});

  linux_uio::HostDeviceOptions device;
  device.runtime_dir = runtime_dir;
  device.link = "bench-inmate";
  device.cell = "host";
  linux_uio::SessionOptions options;
  options.spin_budget = spin_budget(mode);
  std::unique_ptr<Session> session = Session::connect(device, options);
  Channel channel = session->open("echo");

  const std::string console = dir + "/console.log";
  const Clock::time_point started = Clock::now();
  // SIGTERM: QEMU restores the terminal settings -nographic changed.
  const std::unique_ptr<Child> qemu =
      start_pinned({argv, SIGTERM, console, -1},
                   context.settings.cpus.pinned ? context.settings.cpus.second : -1);
  const double ready_after = await_ready(*qemu, console, started);
  if (const std::error_code failed = channel.wait_connected(kBootTimeout)) {
    throw std::runtime_error("channel 'echo' toward the inmate did not connect: " +
                             failed.message());
  }

  Settings rtt = context.rtt_settings(mode, payload);
  rtt.rtt_samples =
      std::min(rtt.rtt_samples, mode == Mode::poll ? kMaxPollRoundTrips : kMaxBlockRoundTrips);
  rtt.rtt_warmup = std::max<std::uint64_t>(rtt.rtt_samples / 10, 10);
  RawSide side(channel, static_cast<std::uint32_t>(payload), SendWith::send, receive_with(mode));
  Latency latency;
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
  });
  measuring.join();
  keep(side.sink());
  channel.close();
  session.reset();
  (void)qemu->stop(std::chrono::seconds(5));

  std::vector<Result> results{rtt_result(kId, mode, payload, latency, rtt)};
  char note[256];
  std::snprintf(
      note, sizeof note,
      "inmate-echo%s under QEMU TCG, software emulation: not a hardware figure; "
      "ready %.2f s after QEMU started",
      mode == Mode::poll ? " with poll=1 (spins, never halts)" : " (halts between doorbells)",
      ready_after);
  results.back().note = note;
  results.push_back(unavailable(kId, mode, Measure::throughput, payload, Status::not_applicable,
                                "round trips only"));
  return results;
}

}  // namespace

Runner inmate_runner() {
  const std::string missing = missing_reason();
  Runner runner;
  runner.transport = {
      kId,
      "inmate in QEMU TCG, emulated",
      Role::cellink,
      {Mode::poll, Mode::block},
      "a Channel between this process and examples/inmate-echo, a bare-metal "
      "cell booted in QEMU under TCG (software emulation, not a hardware figure) "
      "on a link of `cellink daemon`; poll: the inmate runs with poll=1",
      missing.empty(),
      missing.empty() ? find_program(kQemu) + ", " + inmate_elf().string() : missing};
  runner.sizes = {kPayload};
  runner.on_request = true;
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string why = missing_reason();
    if (!why.empty()) {
      return std::vector<Result>{
          unavailable(kId, mode, Measure::rtt, payload, Status::not_installed, why),
          unavailable(kId, mode, Measure::throughput, payload, Status::not_installed, why)};
    }
    return measure(context, mode, payload);
  };
  return runner;
}

}  // namespace cellink::bench::suite
