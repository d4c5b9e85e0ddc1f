// Processes cellink_bench starts: `cellink daemon`, iox-roudi, and peers of
// itself (`cellink_bench --peer KIND ...`), which play the other side of a
// cross-process row and send what they measured back through a pipe.
//
// Nothing outlives the bench: every child gets PR_SET_PDEATHSIG (the kernel
// signals it when the bench dies, even by SIGKILL), a Child's destructor
// stops and reaps it, and install_cleanup_handlers() makes SIGINT, SIGTERM,
// SIGHUP, SIGPIPE, SIGABRT (fail() aborts) and SIGSEGV first signal every
// running child, give it a moment to exit and remove the private directory.
//
// Threading: start, wait for and stop children from the main thread only
// (PR_SET_PDEATHSIG fires when the thread that forked exits).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../harness.hpp"
#include "../ring_bench.hpp"
#include "cellink/linux-uio/unique_fd.hpp"

namespace cellink::bench::suite {

// `work_dir`: the private directory the handlers remove.
void install_cleanup_handlers(const std::string& work_dir);
// A file a killed child would leave behind, removed by the handlers too.
// `path` must be a string literal (or otherwise live for ever).
void add_cleanup_path(const char* path);

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is the program's path
  int stop_signal = SIGKILL;      // how it is stopped, by us or by the kernel
  std::string log_file;           // its stdout and stderr; empty: both to our stderr
  int result_fd = -1;             // becomes descriptor 3 in the child
};

class Child {
 public:
  // Throws std::runtime_error when fork fails. A failed exec shows as exit
  // status 127.
  explicit Child(const ChildSpec& spec);
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Stops it (stop_signal, then SIGKILL after 5 s) and reaps it.
  ~Child();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool running();
  // Waits up to `timeout` for it to exit; true with `status` (waitpid's)
  // when it did.
  [[nodiscard]] bool wait_exit(std::chrono::milliseconds timeout, int& status);
  // Sends stop_signal and waits up to `grace`, then SIGKILL. Returns the
  // waitpid status.
  int stop(std::chrono::milliseconds grace);

 private:
  pid_t pid_ = -1;
  int stop_signal_;
  int slot_ = -1;
};

// "exit status 1", "signal 9".
[[nodiscard]] std::string describe_exit(int status);

// Starts a service (the daemon, RouDi) and waits up to 10 s until `ready()`.
// Null with `error` (naming `what`, with the end of spec.log_file) when it
// exits or does not get ready in time.
[[nodiscard]] std::unique_ptr<Child> start_service(const ChildSpec& spec, const char* what,
                                                   const std::function<bool()>& ready,
                                                   std::string& error);

// The executable `name` in $PATH; empty when there is none.
[[nodiscard]] std::string find_program(const std::string& name);
// The last `bytes` bytes of a text file ("" when unreadable).
[[nodiscard]] std::string file_tail(const std::string& path, std::size_t bytes);

// What a peer measured, sent raw through its result pipe (both ends are the
// same binary). Ticks are the TSC, the same in every process.
struct PeerReport {
  static constexpr std::uint32_t kMagic = 0x50424c43;  // "CLBP"
  std::uint32_t magic = kMagic;
  std::uint32_t reserved = 0;
  std::uint64_t median_block = 0;  // untimed pass; 0 without one
  std::uint64_t stream_begin = 0;  // ticks at the end of the stream's warm-up
  std::uint64_t stream_end = 0;    // ticks after the last message
  Histogram histogram;             // the round trips, ticks
};

// The pipe a peer reports through: the bench keeps the read end, the child
// gets the write end as descriptor 3.
class ResultPipe {
 public:
  ResultPipe();
  [[nodiscard]] int write_end() const noexcept { return write_.get(); }
  // Closes our copy of the write end once the child has it, so that its
  // exit shows as end of file.
  void close_write_end() noexcept { write_.reset(); }
  // Reads the report; false with `error` on end of file, a bad magic or a
  // timeout.
  [[nodiscard]] bool read(PeerReport& report, std::chrono::milliseconds timeout,
                          std::string& error);

 private:
  linux_uio::UniqueFd read_;
  linux_uio::UniqueFd write_;
};

// Writes `report` to descriptor 3 (in a peer). Aborts on failure.
void send_report(const PeerReport& report);

// The command line of a peer: cellink_bench --peer KIND followed by these.
struct PeerArgs {
  std::string kind;  // daemon-echo, iceoryx-ping, iceoryx-pong
  std::string mode;  // poll, block, adaptive
  std::uint64_t size = 0;
  std::uint64_t rtt_samples = 0;
  std::uint64_t rtt_warmup = 0;
  std::uint64_t stream_records = 0;
  std::uint64_t stream_warmup = 0;
  int cpu = -1;  // pin to this CPU; -1: do not pin
  std::string runtime_dir;
  std::string link;

  // The counts of one row, as the bench measures it.
  [[nodiscard]] static PeerArgs for_row(std::string kind, const std::string& mode,
                                        std::uint64_t size, const Settings& rtt,
                                        const StreamCase& stream);
  [[nodiscard]] std::vector<std::string> argv(const std::string& self) const;
  // Parses argv[2..]; false with `error` on an unknown or malformed flag.
  [[nodiscard]] bool parse(int argc, char** argv, std::string& error);
  // Settings whose round-trip plan matches the bench's (no untimed pass).
  [[nodiscard]] Settings settings() const;
};

// Pins the calling thread to `cpu` (no-op for -1); aborts on failure.
void pin_this_thread(int cpu);

// Runs a peer: the entry point of `cellink_bench --peer ...`.
[[nodiscard]] int daemon_peer_main(const PeerArgs& args);   // daemon_transport.cpp
[[nodiscard]] int iceoryx_peer_main(const PeerArgs& args);  // baseline_iceoryx.cpp

}  // namespace cellink::bench::suite
