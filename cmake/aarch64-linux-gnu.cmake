# Toolchain for cross-building to aarch64 Linux with Debian's cross compilers
# (g++-aarch64-linux-gnu). Test binaries run through qemu-user, so ctest works
# on an x86-64 host:
#   cmake -B build-aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# ARMv8.2 with the int8 dot product and fp16 arithmetic: every server-class
# aarch64 core of interest (Neoverse N1 and later, Apple, Grace) has them.
set(CMAKE_C_FLAGS_INIT "-march=armv8.2-a+dotprod+fp16")
set(CMAKE_CXX_FLAGS_INIT "-march=armv8.2-a+dotprod+fp16")

# qemu-user finds the arm64 loader and libraries under the -L prefix. The
# cross toolchain's own copy is /usr/aarch64-linux-gnu; but once multiarch
# arm64 packages are installed (libabsl-dev:arm64 pulls in libc6:arm64), the
# loader from that prefix meets the newer host libc.so.6 of libc6:arm64 and
# any program that starts a thread hangs (seen with qemu 7.2, glibc 2.36).
# Then the root prefix, whose loader and libc match, is the one to use.
if(EXISTS /lib/ld-linux-aarch64.so.1)
  set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64-static;-L;/")
else()
  set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64-static;-L;/usr/aarch64-linux-gnu")
endif()

# Libraries and packages come from the arm64 multiarch directories
# (libabsl-dev:arm64 and friends), programs from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
