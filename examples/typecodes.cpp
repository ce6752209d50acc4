// Value and Array with typecodes: Python's typecode is a C++ type here (seed 002, "6-共享内存").
//
//   import multiprocessing as mp
//
//   value1 = mp.Value('i', 0)
//   value2 = mp.Value('d', 3.14)
//   array = mp.Array('i', [1, 2, 3, 4])
//   # mp.Array('i', [[1, 2], [3, 4]])  ->  TypeError: an integer is required (one dimension only)
//
//   | typecode | C type             | here               | min bytes |
//   | 'b'      | signed char        | signed char        | 1         |
//   | 'B'      | unsigned char      | unsigned char      | 1         |
//   | 'u'      | Py_UNICODE         | wchar_t            | 2         |
//   | 'h'      | signed short       | short              | 2         |
//   | 'H'      | unsigned short     | unsigned short     | 2         |
//   | 'i'      | signed int         | int                | 2         |
//   | 'I'      | unsigned int       | unsigned           | 2         |
//   | 'l'      | signed long        | long               | 4         |
//   | 'L'      | unsigned long      | unsigned long      | 4         |
//   | 'q'      | signed long long   | long long          | 8         |
//   | 'Q'      | unsigned long long | unsigned long long | 8         |
//   | 'f'      | float              | float              | 4         |
//   | 'd'      | double             | double             | 8         |
#include <iostream>
#include <string_view>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;

// A child writes 7 into a shared cell of type T; the parent reads it back.
template <class T>
void set_to_seven(mp::Value<T> cell) {
  cell.value() = T(7);
}

template <class T>
void show(char typecode, std::string_view cxx_type) {
  mp::Value<T> cell;
  mp::Process p(set_to_seven<T>, cell);
  p.start();
  p.join();
  std::cout << "'" << typecode << "'  " << cxx_type << ", " << sizeof(T) << " bytes: " << static_cast<long double>(cell.value())
            << std::endl;
  example::check(cell.value() == T(7), std::string(cxx_type) + " went through shared memory");
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Value<int> value1(0);
  mp::Value<double> value2(3.14);
  mp::Array<int> array{1, 2, 3, 4};
  std::cout << value1.value() << ' ' << value2.value() << ' ' << mp::Object(array.to_vector()) << std::endl;
  // Array<int>{{1, 2}, {3, 4}} does not compile: an Array has one dimension, as in Python.

  show<signed char>('b', "signed char");
  show<unsigned char>('B', "unsigned char");
  show<wchar_t>('u', "wchar_t");
  show<short>('h', "short");
  show<unsigned short>('H', "unsigned short");
  show<int>('i', "int");
  show<unsigned>('I', "unsigned");
  show<long>('l', "long");
  show<unsigned long>('L', "unsigned long");
  show<long long>('q', "long long");
  show<unsigned long long>('Q', "unsigned long long");
  show<float>('f', "float");
  show<double>('d', "double");
}
