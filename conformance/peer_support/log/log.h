/* liblog's macros for ashmem-dev.cpp: messages dropped; LOG_ALWAYS_FATAL prints and aborts, as liblog does. */
#pragma once
#include <stdio.h>
#include <stdlib.h>
#define ALOGD(...) ((void)0)
#define ALOGI(...) ((void)0)
#define ALOGW(...) ((void)0)
#define ALOGE(...) ((void)0)
#define LOG_ALWAYS_FATAL(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr), abort())
