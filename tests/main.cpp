// The Catch2 runner for all of mc's tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
