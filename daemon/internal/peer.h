// daemon/internal/peer.h — who is on the other end of a connection (SO_PEERCRED,
// SO_PEERGROUPS), whether they may connect, and which cache namespace their requests use.
//
// Thread safety: pure functions over values, except ReadPeerCredentials (a syscall on the fd).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "daemon/config.h"

namespace kvtier::daemon::internal {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS; empty when unsupported)
};

// The kernel's record of the connecting process (never anything the client says).
Result<PeerCredentials> ReadPeerCredentials(int fd);

// Access policy: the daemon's own uid is always allowed; with allowed_uids and allowed_gids both
// empty anyone who can open the socket is (the socket's 0660 mode is then the policy); otherwise
// the uid must be listed or the primary or a supplementary group must be.
bool IsAllowed(const DaemonConfig& config, const PeerCredentials& peer, uid_t self_uid);

// "uid:<uid>", or "gid:<gid>" for members of the configured shared_namespace_group.
std::string BaseNamespace(const DaemonConfig& config, const PeerCredentials& peer);

// A request's namespace: the base one, narrowed by a non-empty cache_salt ("<base>/salt:<salt>").
std::string RequestNamespace(std::string_view base, std::string_view cache_salt);

}  // namespace kvtier::daemon::internal
