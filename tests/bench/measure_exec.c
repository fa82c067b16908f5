/* Run a command and report its own resources, untainted by the harness.
 *
 *   measure_exec OUTFILE PROGRAM [ARG...]
 *
 * Linux records the RSS high-water mark of the image a process replaces at exec, so a tool
 * started straight from the (large) Python harness would report the harness's RSS as its own
 * peak. This launcher is tiny: the tool is forked from it, and wait4 gives the tool tree's real
 * peak RSS and CPU time. Elapsed time is measured here too, around fork and wait only.
 * OUTFILE gets one line: elapsed_ns maxrss_kb utime_us stime_us wait_status.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: measure_exec OUTFILE PROGRAM [ARG...]\n");
        return 125;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 126;
    }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("wait4");
        return 126;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long elapsed = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 126;
    }
    fprintf(out, "%lld %ld %lld %lld %d\n", elapsed, ru.ru_maxrss,
            (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec, status);
    fclose(out);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}
