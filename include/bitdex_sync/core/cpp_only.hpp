// Included last by every file of the pure C++ core. The core must stay free of
// postgres.h (its macros and longjmp-based errors do not mix with C++), so a
// core file that pulls it in, directly or through another header, fails here.
#pragma once

#if defined(POSTGRES_H) || defined(PG_CONFIG_H) || defined(C_H)
#error "bitdex_sync core files must not include postgres.h"
#endif
