#include "tests/support/test_support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

namespace kvtier::testing {

std::string ModelPath() {
  const char* env = std::getenv("KVTIER_TEST_MODEL");
  std::string path = (env && *env) ? env : KVTIER_TEST_MODEL_DEFAULT;
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "model file not found: " << path
                  << " (run scripts/fetch-model or set KVTIER_TEST_MODEL)";
  }
  return path;
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  char* made = mkdtemp(tmpl.data());
  if (made == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return "/tmp";
  }
  return made;
}

}  // namespace kvtier::testing
