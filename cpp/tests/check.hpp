// SPDX-License-Identifier: Apache-2.0
// A small self-contained test harness (no framework is installed on the CI machines).
//
//   BIPS_TEST(name) { ... }   registers a test; `bips_tests name` runs it, and CMake registers
//                             each one as its own ctest test (it scans the sources for the macro,
//                             so keep `BIPS_TEST(name)` at the start of a line).
//   CHECK(cond), CHECK_EQ(a, b), CHECK_THROWS_AS(expr, Type)   record a failure and go on.
//   REQUIRE(...), REQUIRE_EQ(...)                               record a failure and end the test.
//
// Failures are counted atomically, so checks may run on any thread and in forked children
// (where the child turns its own count into its exit status, see support.hpp).
#pragma once

#include <bips/types.hpp>

#include <cstddef>
#include <iterator>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace bips::test {

struct TestCase {
    const char *name;
    void (*fn)();
    const char *file;
    int line;
};

std::vector<TestCase> &registry();

struct Registrar {
    Registrar(const char *name, void (*fn)(), const char *file, int line) {
        registry().push_back({name, fn, file, line});
    }
};

/// Thrown by REQUIRE to end the current test; the runner catches it.
struct Abort {};

/// Records one failure (thread-safe) and prints it with its location.
void fail(const char *file, int line, const std::string &what);
/// Failures recorded so far in this process.
int failures();
/// The dynamic type name of a caught exception, demangled.
std::string type_name(const std::type_info &type);

template <class T, class = void> struct Streamable : std::false_type {};
template <class T>
struct Streamable<
    T, std::void_t<decltype(std::declval<std::ostream &>() << std::declval<const T &>())>>
    : std::true_type {};

template <class T, class = void> struct Iterable : std::false_type {};
template <class T>
struct Iterable<T, std::void_t<decltype(std::begin(std::declval<const T &>()))>> : std::true_type {
};

inline std::string show(bips::DType d) { return d.name(); }

template <class T> std::string show(const T &v) {
    if constexpr (std::is_same_v<T, std::byte>) {
        return std::to_string(static_cast<unsigned>(v));
    } else if constexpr (std::is_enum_v<T>) {
        return std::to_string(static_cast<long long>(v));
    } else if constexpr (std::is_same_v<T, bool>) {
        return v ? "true" : "false";
    } else if constexpr (std::is_same_v<T, char> || std::is_same_v<T, signed char> ||
                         std::is_same_v<T, unsigned char>) {
        return std::to_string(static_cast<int>(v));
    } else if constexpr (Streamable<T>::value) {
        std::ostringstream os;
        os << v;
        return os.str();
    } else if constexpr (Iterable<T>::value) {
        // Containers (e.g. bips::Shape): [a, b, c].
        std::string s = "[";
        bool first = true;
        for (const auto &e : v) {
            s += first ? "" : ", ";
            s += show(e);
            first = false;
        }
        return s + "]";
    } else {
        return "<?>";
    }
}

template <class A, class B> bool equal(const A &a, const B &b) {
    if constexpr (std::is_integral_v<A> && std::is_integral_v<B> && !std::is_same_v<A, bool> &&
                  !std::is_same_v<B, bool>) {
        // Compare mixed signed/unsigned integers by value, not by C++ promotion rules.
        if constexpr (std::is_signed_v<A> != std::is_signed_v<B>) {
            if constexpr (std::is_signed_v<A>) {
                return a >= 0 &&
                       static_cast<unsigned long long>(a) == static_cast<unsigned long long>(b);
            } else {
                return b >= 0 &&
                       static_cast<unsigned long long>(a) == static_cast<unsigned long long>(b);
            }
        } else {
            return a == b;
        }
    } else {
        return a == b;
    }
}

template <class A, class B>
bool check_eq(const char *file, int line, const char *ea, const char *eb, const A &a, const B &b) {
    if (equal(a, b))
        return true;
    fail(file, line,
         std::string("CHECK_EQ(") + ea + ", " + eb + "): " + show(a) + " != " + show(b));
    return false;
}

} // namespace bips::test

#define BIPS_TEST(name)                                                                            \
    static void bips_test_##name();                                                                \
    static const ::bips::test::Registrar bips_registrar_##name(#name, &bips_test_##name, __FILE__, \
                                                               __LINE__);                          \
    static void bips_test_##name()

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ::bips::test::fail(__FILE__, __LINE__, "CHECK(" #cond ")");                            \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            ::bips::test::fail(__FILE__, __LINE__, "REQUIRE(" #cond ")");                          \
            throw ::bips::test::Abort{};                                                           \
        }                                                                                          \
    } while (0)

#define CHECK_EQ(a, b) ((void)::bips::test::check_eq(__FILE__, __LINE__, #a, #b, (a), (b)))

#define REQUIRE_EQ(a, b)                                                                           \
    do {                                                                                           \
        if (!::bips::test::check_eq(__FILE__, __LINE__, #a, #b, (a), (b)))                         \
            throw ::bips::test::Abort{};                                                           \
    } while (0)

/// Passes only if `expr` throws `Type` (or a subclass); any other exception is a failure that
/// names what was thrown.
#define CHECK_THROWS_AS(expr, Type)                                                                \
    do {                                                                                           \
        bool bips_caught_ = false;                                                                 \
        try {                                                                                      \
            (void)(expr);                                                                          \
        } catch (const Type &) {                                                                   \
            bips_caught_ = true;                                                                   \
        } catch (const ::bips::test::Abort &) {                                                    \
            throw;                                                                                 \
        } catch (const std::exception &bips_e_) {                                                  \
            bips_caught_ = true;                                                                   \
            ::bips::test::fail(__FILE__, __LINE__,                                                 \
                               "CHECK_THROWS_AS(" #expr ", " #Type "): threw " +                   \
                                   ::bips::test::type_name(typeid(bips_e_)) + ": " +               \
                                   bips_e_.what());                                                \
        } catch (...) {                                                                            \
            bips_caught_ = true;                                                                   \
            ::bips::test::fail(__FILE__, __LINE__,                                                 \
                               "CHECK_THROWS_AS(" #expr ", " #Type "): threw a non-exception");    \
        }                                                                                          \
        if (!bips_caught_)                                                                         \
            ::bips::test::fail(__FILE__, __LINE__,                                                 \
                               "CHECK_THROWS_AS(" #expr ", " #Type "): did not throw");            \
    } while (0)
