// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bips/types.hpp>

#include <string>
#include <vector>

namespace bips {

/// Throws InvalidArgument unless `name` is a valid pool name.
void validate_name(const std::string &name);

/// Every bips pool under /dev/shm, read without attaching. Entries that cannot be read (other
/// user, corrupt) are listed with `error` set instead of being skipped.
std::vector<PoolInfo> list_pools();

/// One pool's details, including a row per consumer slot. Throws PoolNotFound, CorruptPool,
/// IncompatiblePool, std::system_error.
PoolInfo pool_info(const std::string &name);

/// Clears the state left by dead consumers of pool `name` (what the producer does by itself
/// every 100 ms). Returns the number of consumer slots reclaimed.
unsigned reclaim_dead_consumers(const std::string &name);

/// Removes pool `name` if nothing live uses it (no producer, no consumer). Returns true if
/// removed, false if missing or in use; throws CorruptPool for a file that is not a bips pool
/// (which it leaves alone).
bool remove_stale_pool(const std::string &name);

} // namespace bips
