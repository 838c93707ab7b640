// daemon/systemd.h — the small part of systemd kvtierd speaks: socket activation (LISTEN_FDS),
// sd_notify (READY=1, STOPPING=1, STATUS=, WATCHDOG=1) and the watchdog interval.
//
// Thread safety: every function is safe from any thread. Outside systemd (no NOTIFY_SOCKET, no
// LISTEN_FDS) they do nothing and report "not present".
#pragma once

#include <chrono>
#include <string>

#include "base/status.h"

namespace kvtier::daemon::systemd {

// The listening Unix stream socket passed by socket activation, -1 when none was passed.
// More than one socket, or one that is not a listening AF_UNIX stream socket, is an error.
// Unsets LISTEN_FDS/LISTEN_PID so children do not inherit them.
Result<int> TakeInheritedSocket();

// Sends `state` ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...") to the service manager.
void Notify(const std::string& state);

// The watchdog interval systemd expects pings within (WATCHDOG_USEC for this process), or zero.
std::chrono::microseconds WatchdogInterval();

}  // namespace kvtier::daemon::systemd
