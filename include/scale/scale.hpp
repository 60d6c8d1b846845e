#pragma once
/// \file The umbrella header: everything a program using scale names.

#include <scale/version.hpp>

#include <scale/error.hpp>
#include <scale/future.hpp>
#include <scale/runtime.hpp>
#include <scale/sleep_for.hpp>
#include <scale/when_all.hpp>
#include <scale/when_any.hpp>

#include <scale/scope.hpp>
#include <scale/shared_event_emitter.hpp>
#include <scale/shared_memory.hpp>
#include <scale/subscription.hpp>

#include <scale/iterator.hpp>
#include <scale/broadcast.hpp>
#include <scale/worker_result.hpp>
#include <scale/managers/inline.hpp>
#include <scale/managers/thread_pool.hpp>
#include <scale/managers/process_pool.hpp>
#include <scale/managers/cluster.hpp>
#include <scale/fn.hpp>
#include <scale/crash_report.hpp>
#include <scale/progress.hpp>
#include <scale/provides.hpp>
#include <scale/run_options.hpp>
#include <scale/scalability_manager.hpp>
