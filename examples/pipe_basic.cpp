// A Pipe between parent and child (seed 001).
//
//   from multiprocessing import Process, Pipe
//
//   def f(conn):
//       conn.send([42, None, 'hello'])
//       conn.close()
//
//   if __name__ == '__main__':
//       parent_conn, child_conn = Pipe()
//       p = Process(target=f, args=(child_conn,))
//       p.start()
//       print(parent_conn.recv())   # prints "[42, None, 'hello']"
//       p.join()
#include <iostream>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

void f(mp::Connection conn) {
  conn.send(mp::Object::Array{42, mp::Object(), "hello"});  // mp::Object() is None
  conn.close();
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto [parent_conn, child_conn] = mp::Pipe();
  mp::Process p(f, child_conn);
  p.start();
  mp::Object message = parent_conn.recv();
  std::cout << message << std::endl;
  p.join();
  example::check(message.repr() == "[42, None, 'hello']", "the list arrived whole");
}
