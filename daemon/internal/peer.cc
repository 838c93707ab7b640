#include "daemon/internal/peer.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

namespace kvtier::daemon::internal {
namespace {

bool InGroup(const PeerCredentials& peer, gid_t gid) {
  return peer.gid == gid ||
         std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end();
}

}  // namespace

Result<PeerCredentials> ReadPeerCredentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return IOError(std::string("SO_PEERCRED: ") + std::strerror(errno));
  }
  PeerCredentials peer;
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      peer.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;  // old kernel: primary group only
    groups.resize(bytes / sizeof(gid_t) + 1);
  }
  return peer;
}

bool IsAllowed(const DaemonConfig& config, const PeerCredentials& peer, uid_t self_uid) {
  if (peer.uid == self_uid) return true;
  if (config.allowed_uids.empty() && config.allowed_gids.empty()) return true;
  if (std::find(config.allowed_uids.begin(), config.allowed_uids.end(), peer.uid) !=
      config.allowed_uids.end()) {
    return true;
  }
  for (gid_t gid : config.allowed_gids) {
    if (InGroup(peer, gid)) return true;
  }
  return false;
}

std::string BaseNamespace(const DaemonConfig& config, const PeerCredentials& peer) {
  if (config.shared_namespace_gid && InGroup(peer, *config.shared_namespace_gid)) {
    return "gid:" + std::to_string(*config.shared_namespace_gid);
  }
  return "uid:" + std::to_string(peer.uid);
}

std::string RequestNamespace(std::string_view base, std::string_view cache_salt) {
  std::string ns(base);
  if (!cache_salt.empty()) {
    ns += "/salt:";
    ns += cache_salt;
  }
  return ns;
}

}  // namespace kvtier::daemon::internal
