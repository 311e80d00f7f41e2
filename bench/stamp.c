/* A handler that timestamps itself as soon as it runs: appends
 * "<SYNTH_ARG_T> <CLOCK_REALTIME ns>\n" to the file named by argv[1], in one
 * write. bench/latency.py compares it with the time the event was written. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2)
        return 2;
    const char *t = getenv("SYNTH_ARG_T");
    char line[128];
    int n = snprintf(line, sizeof line, "%s %lld\n", t ? t : "-",
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n)
        return 1;
    return 0;
}
