// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bips/consumer.hpp>
#include <bips/device.hpp>
#include <bips/errors.hpp>
#include <bips/interrupt.hpp>
#include <bips/notifier.hpp>
#include <bips/pool.hpp>
#include <bips/producer.hpp>
#include <bips/types.hpp>
#include <bips/version.hpp>
#include <bips/video.hpp>
