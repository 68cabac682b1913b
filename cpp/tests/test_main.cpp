#include <bips/bips.hpp>
int main(){}
