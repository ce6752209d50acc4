// is_alive, terminate and exitcode (seed 000).
//
//   from multiprocessing import Process
//   import time
//
//   def f(name, seconds):
//       time.sleep(seconds)
//       print('hello', name)
//
//   p1 = Process(target=f, args=('bob', 0.01))
//   p1.start()
//   print('p1 is_alive:', p1.is_alive())
//   p1.join()
//   print('p1 is_alive:', p1.is_alive())
//
//   p2 = Process(target=f, args=('tom', 60))
//   p2.start()
//   print('p2 started, p2 is_alive:', p2.is_alive())
//   p2.terminate()
//   p2.join()          # the seed sleeps 0.1 s here; join() waits exactly as long as needed
//   print('p2 terminated, p2 is_alive:', p2.is_alive())
//   print(p2.exitcode) # -15: killed by SIGTERM
#include <chrono>
#include <csignal>
#include <iostream>
#include <string>
#include <thread>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

void f(const std::string& name, std::chrono::milliseconds nap) {
  std::this_thread::sleep_for(nap);
  std::cout << "hello " << name << std::endl;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  std::cout << std::boolalpha;
  mp::Process p1(f, std::string("bob"), 10ms);
  p1.start();
  std::cout << "p1 is_alive: " << p1.is_alive() << std::endl;
  p1.join();
  std::cout << "p1 is_alive: " << p1.is_alive() << std::endl;
  example::check(p1.exitcode() == 0, "p1 ended normally");

  mp::Process p2(f, std::string("tom"), 60s);
  p2.start();
  std::cout << "p2 started, p2 is_alive: " << p2.is_alive() << std::endl;
  p2.terminate();
  p2.join();
  std::cout << "p2 terminated, p2 is_alive: " << p2.is_alive() << std::endl;
  std::cout << *p2.exitcode() << std::endl;
  example::check(p2.exitcode() == -SIGTERM, "p2 was killed by SIGTERM");
}
