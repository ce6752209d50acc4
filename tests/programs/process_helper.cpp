// A whole program for what only a real main() can show: buffered output at fork, the exit
// function, atexit handlers and static destructors, a parent killed under its children.
// test_process.cpp runs it as `process_helper <mode>` with stdout and stderr on one pipe and
// reads the lines it prints, under each start method (MULTIPROC_START_METHOD in its environment).
// Modes are the functions in `modes` below.
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "proc_children.hpp"

namespace mp = multiproc;

namespace {

// One write(2) per line, so that lines from several processes never interleave.
void say(const std::string& line) {
  std::string out = line + "\n";
  [[maybe_unused]] auto n = ::write(STDOUT_FILENO, out.data(), out.size());
}

void print_child_line() { std::printf("child-output\n"); }

// Leaves text in stdout's buffer (no newline, stdout is a pipe) and in std::cout, then forks.
int buffered_output() {
  std::printf("printf-before-start ");
  std::cout << "cout-before-start ";
  mp::Process p(print_child_line);
  p.start();
  p.join();
  std::printf("\n");
  return 0;
}

int buffered_output_unsynced() {
  std::ios::sync_with_stdio(false);
  std::cout << "unsynced-cout-before-start ";
  mp::Process p(print_child_line);
  p.start();
  p.join();
  std::cout << std::endl;
  return 0;
}

// What the mode wants printed after the library's exit function: registered with atexit before
// mp::init registers that function, it runs after it.
void (*g_exit_report)() = nullptr;
void run_exit_report() {
  if (g_exit_report) g_exit_report();
}

void report_children_at_exit() {
  say("children-at-exit: " + std::to_string(multiproc_test::children_of(::getpid()).size()));
}

// Reads one line from stdin (the test's pipe), so it ends only after main() has returned.
void finish_when_stdin_says() {
  std::string line;
  std::getline(std::cin, line);
  say("child-finished");
}

int exit_joins_child() {
  g_exit_report = report_children_at_exit;
  mp::Process p(finish_when_stdin_says);
  p.start();
  say("main-returning");
  return 0;
}

void report_sigterm(int) {
  static const char line[] = "daemon-got-sigterm\n";
  [[maybe_unused]] auto n = ::write(STDOUT_FILENO, line, sizeof line - 1);
  ::_exit(0);
}

void daemon_waiting_for_sigterm(mp::Connection ready) {
  ::signal(SIGTERM, report_sigterm);
  ready.send(true);
  for (;;) ::pause();
}

void daemon_ignoring_sigterm(mp::Connection ready) {
  ::signal(SIGTERM, SIG_IGN);
  ready.send(true);
  for (;;) ::pause();
}

int start_daemon_then_return(void (*body)(mp::Connection)) {
  g_exit_report = report_children_at_exit;
  auto [reader, writer] = mp::Pipe(false);
  mp::Process p(mp::ProcessOptions{.name = "daemon", .daemon = true}, body, writer);
  p.start();
  if (!reader.poll(std::chrono::seconds(10))) return 2;
  reader.recv<bool>();
  say("daemon-pid: " + std::to_string(*p.pid()));
  say("main-returning");
  return 0;
}

int exit_terminates_daemon() { return start_daemon_then_return(daemon_waiting_for_sigterm); }
int exit_kills_stubborn_daemon() { return start_daemon_then_return(daemon_ignoring_sigterm); }

struct AnnouncesDestruction {
  ~AnnouncesDestruction() { say("static-destructor pid=" + std::to_string(::getpid())); }
} g_static_object;

void announce_atexit() { say("atexit-handler pid=" + std::to_string(::getpid())); }

void return_normally() {}
void exit_three() { throw mp::SystemExit{3}; }
void throw_error() { throw mp::ValueError("expected failure"); }
void call_std_exit() { std::exit(4); }

// Children leaving in every way a child can; none may run the handler or the destructor.
int child_skips_parent_exit_handlers() {
  std::atexit(announce_atexit);
  say("main pid=" + std::to_string(::getpid()));
  std::string codes = "exitcodes:";
  for (auto body : {return_normally, exit_three, throw_error, call_std_exit}) {
    mp::Process p(body);
    p.start();
    p.join();
    codes += " " + std::to_string(*p.exitcode());
  }
  say(codes);
  return 0;
}

void pause_forever() {
  for (;;) ::pause();
}

// The test kills this program with SIGKILL once it printed the child's pid.
int parent_gets_killed() {
  mp::Process p(pause_forever);
  p.start();
  say("child-pid: " + std::to_string(*p.pid()));
  pause_forever();
  return 0;
}

void report_zombies_at_exit() {
  say("zombies-at-exit: " + std::to_string(multiproc_test::zombie_children_of(::getpid()).size()));
}

int unjoined_child_reaped_at_exit() {
  g_exit_report = report_zombies_at_exit;
  int ended;
  {
    mp::Process p(return_normally);
    p.start();
    ended = ::dup(p.sentinel());
  }
  if (mp::connection::wait(std::vector<int>{ended}, std::chrono::seconds(10)).empty()) return 2;
  ::close(ended);
  say("zombies-before-exit: " + std::to_string(multiproc_test::zombie_children_of(::getpid()).size()));
  return 0;
}

void wait_for_stdin_line() {
  std::string line;
  std::getline(std::cin, line);
}

// Two starts while a second thread runs: under fork the log has one warning naming forkserver.
int threaded_start_warns_once() {
  mp::log_to_stderr();
  std::thread waiting(wait_for_stdin_line);
  for (int i = 0; i < 2; ++i) {
    mp::Process p(return_normally);
    p.start();
    p.join();
  }
  say("started-twice");
  waiting.join();
  return 0;
}

// Held by one of the parent's threads while the children start.
std::mutex g_held_by_a_thread;

// Exit code 0: the child took the mutex. 3: a thread it does not have holds it (a fork's copy).
void take_held_mutex() {
  if (!g_held_by_a_thread.try_lock()) throw mp::SystemExit{3};
  g_held_by_a_thread.unlock();
}

// Threads that run until release(); the first holds g_held_by_a_thread all the while.
class BusyThreads {
public:
  explicit BusyThreads(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back(&BusyThreads::run, this, i == 0);
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return running_ == n; });
  }
  void release() {
    {
      std::lock_guard lock(m_);
      released_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

private:
  void run(bool hold) {
    std::unique_lock<std::mutex> held;
    if (hold) held = std::unique_lock(g_held_by_a_thread);
    std::unique_lock lock(m_);
    ++running_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
  }
  std::mutex m_;
  std::condition_variable cv_;
  int running_ = 0;
  bool released_ = false;
  std::vector<std::thread> threads_;
};

// Three threads, one holding a mutex every child takes; a child under each start method, in this
// order. Prints "<method> exitcode <code>" ("hung" if it did not end within 30 s).
int threads_hold_mutex() {
  mp::log_to_stderr();
  BusyThreads threads(3);
  const std::pair<const char*, mp::StartMethod> methods[] = {
      {"spawn", mp::StartMethod::spawn}, {"forkserver", mp::StartMethod::forkserver}, {"fork", mp::StartMethod::fork}};
  for (auto [name, method] : methods) {
    mp::Process p(mp::ProcessOptions{.start_method = method}, take_held_mutex);
    p.start();
    bool ended = p.join(std::chrono::seconds(30));
    if (!ended) p.kill();
    p.join();
    say(std::string(name) + " exitcode " + (ended ? std::to_string(*p.exitcode()) : "hung"));
  }
  threads.release();
  return 0;
}

const std::map<std::string, std::function<int()>> modes = {
    {"threads-hold-mutex", threads_hold_mutex},
    {"threaded-start-warns-once", threaded_start_warns_once},
    {"buffered-output", buffered_output},
    {"buffered-output-unsynced", buffered_output_unsynced},
    {"exit-joins-child", exit_joins_child},
    {"exit-terminates-daemon", exit_terminates_daemon},
    {"exit-kills-stubborn-daemon", exit_kills_stubborn_daemon},
    {"child-skips-parent-exit-handlers", child_skips_parent_exit_handlers},
    {"parent-gets-killed", parent_gets_killed},
    {"unjoined-child-reaped-at-exit", unjoined_child_reaped_at_exit},
};

} // namespace

int main(int argc, char** argv) {
  std::atexit(run_exit_report);
  mp::init(argc, argv);
  auto mode = argc == 2 ? modes.find(argv[1]) : modes.end();
  if (mode == modes.end()) {
    std::cerr << "usage: process_helper <mode>\n";
    return 64;
  }
  return mode->second();
}
