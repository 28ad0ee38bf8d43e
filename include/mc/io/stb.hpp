// mc/io/stb.hpp — stb_image compiled into every translation unit that includes it, with internal linkage
// (STB_IMAGE_STATIC), so the header-only engine needs no separate library. Include this header instead of
// <stb/stb_image.h>.
#pragma once
#ifndef MC_STB_IMAGE_INCLUDED
#define MC_STB_IMAGE_INCLUDED
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO_OVERRIDE
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#endif
