// A client and a calculator talking over one duplex Pipe (seed 000).
//
//   from multiprocessing import Process, Pipe
//
//   def client(conn):
//       for i in range(20):
//           print('client', 'send', i)
//           conn.send(i)
//           r = conn.recv()
//           print('client', 'recv', r)
//       conn.send(None)
//       conn.close()
//
//   def calc(conn):
//       while True:
//           r = conn.recv()
//           if r is None:
//               break
//           print('calc', 'recv', r)
//           conn.send(str(r) + '*' + str(r) + '=' + str(r * r))
//       conn.close()
//
//   conn1, conn2 = Pipe(duplex=True)   # duplex=False: conn1 only receives, conn2 only sends
//   send_pro = Process(target=client, args=(conn2,))
//   recv_pro = Process(target=calc, args=(conn1,))
//   send_pro.start()
//   recv_pro.start()
//   send_pro.join()
//   recv_pro.join()
#include <iostream>
#include <optional>
#include <string>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

std::string square_text(int r) { return std::to_string(r) + "*" + std::to_string(r) + "=" + std::to_string(r * r); }

void client(mp::Connection conn) {
  for (int i = 0; i < 20; ++i) {
    std::cout << "client send " << i << std::endl;
    conn.send(std::optional<int>(i));
    auto r = conn.recv<std::string>();
    std::cout << "client recv " << r << std::endl;
    example::check(r == square_text(i), "calc answered " + square_text(i));
  }
  conn.send(std::optional<int>());  // None: the calculator stops
  conn.close();
}

void calc(mp::Connection conn) {
  while (auto r = conn.recv<std::optional<int>>()) {
    std::cout << "calc recv " << *r << std::endl;
    conn.send(square_text(*r));
  }
  conn.close();
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto [conn1, conn2] = mp::Pipe(true);
  mp::Process send_pro(client, conn2);
  mp::Process recv_pro(calc, conn1);
  send_pro.start();
  recv_pro.start();
  send_pro.join();
  recv_pro.join();
  example::check(send_pro.exitcode() == 0 && recv_pro.exitcode() == 0, "both ends finished cleanly");
}
