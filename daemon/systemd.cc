#include "daemon/systemd.h"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <cstdint>

namespace kvtier::daemon::systemd {

Result<int> TakeInheritedSocket() {
  const int n = sd_listen_fds(/*unset_environment=*/1);
  if (n < 0) return InternalError("sd_listen_fds failed: error " + std::to_string(-n));
  if (n == 0) return -1;
  if (n > 1) {
    return InvalidArgumentError("socket activation passed " + std::to_string(n) +
                                " sockets; kvtierd listens on exactly one");
  }
  const int fd = SD_LISTEN_FDS_START;
  if (sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) <= 0) {
    return InvalidArgumentError(
        "the socket passed by socket activation is not a listening Unix stream socket");
  }
  return fd;
}

void Notify(const std::string& state) { sd_notify(/*unset_environment=*/0, state.c_str()); }

std::chrono::microseconds WatchdogInterval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) <= 0) return {};
  return std::chrono::microseconds(usec);
}

}  // namespace kvtier::daemon::systemd
