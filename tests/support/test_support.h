// tests/support/test_support.h — helpers shared by kvtier's tests.
#pragma once

#include <string>

namespace kvtier::testing {

// Path of the real GGUF for tests labelled `model`: $KVTIER_TEST_MODEL, else the build's
// default (~/.cache/kvtier/models/SmolLM2-135M-Instruct.Q4_1.gguf). Fails the test (not skip)
// when it is missing: CI fetches it first with scripts/fetch-model.
std::string ModelPath();

// A fresh empty temporary directory, removed by the caller if it cares.
std::string MakeTempDir(const std::string& prefix);

}  // namespace kvtier::testing
