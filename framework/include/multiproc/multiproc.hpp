// multiproc: Python's multiprocessing for C++20. Include this for everything; namespace mp = multiproc.
#pragma once

#include "multiproc/actor.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/errors.hpp"
#include "multiproc/logging.hpp"
#include "multiproc/managers.hpp"
#include "multiproc/node.hpp"
#include "multiproc/object.hpp"
#include "multiproc/pool.hpp"
#include "multiproc/process.hpp"
#include "multiproc/queues.hpp"
#include "multiproc/sharedctypes.hpp"
#include "multiproc/synchronize.hpp"
