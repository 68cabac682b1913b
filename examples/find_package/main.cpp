// SPDX-License-Identifier: Apache-2.0
// A minimal external producer: creates pool NAME with frames of shape (H, W, 3) uint8 and
// publishes N of them, frame i with every byte = i % 251 and metadata "frame i", then closes.
//
//   app NAME [N=10] [H=48] [W=64] [WAIT_S=10]
//
// It waits up to WAIT_S seconds for a first consumer, so that no frame is published to nobody.
#include <bips/bips.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s NAME [N] [H] [W] [WAIT_S]\n", argv[0]);
        return 2;
    }
    const std::string name = argv[1];
    const long n = argc > 2 ? std::atol(argv[2]) : 10;
    const long h = argc > 3 ? std::atol(argv[3]) : 48;
    const long w = argc > 4 ? std::atol(argv[4]) : 64;
    const long wait_s = argc > 5 ? std::atol(argv[5]) : 10;
    try {
        bips::PoolOptions options;
        options.capacity = 4;
        options.shape = {h, w, 3};
        options.dtype = bips::UINT8;
        options.meta_size = 32;
        bips::Producer producer(name, options);
        std::printf("bips %s: pool '%s' ready\n", BIPS_VERSION, name.c_str());
        std::fflush(stdout);

        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
        while (producer.stats().consumers == 0) {
            if (std::chrono::steady_clock::now() >= deadline) {
                std::fprintf(stderr, "no consumer attached within %ld s\n", wait_s);
                return 1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        for (long i = 0; i < n; ++i) {
            bips::Buffer buffer = producer.acquire(std::chrono::seconds(10));
            std::memset(buffer.data(), static_cast<int>(i % 251), buffer.nbytes());
            const std::string meta = "frame " + std::to_string(i);
            producer.publish(std::move(buffer), -1, meta.data(), meta.size());
        }
        producer.close(); // consumers drain what is queued, then see the end of the stream
        std::printf("published %ld frames\n", n);
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
