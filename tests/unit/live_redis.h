/* A real redis-server for the unit tests that need one: started on a free
 * loopback port in a private directory (`tmpdir`, made by the test), killed
 * with the test process at the latest. Header-only: each test binary that
 * includes it gets its own copy of these statics. */
#ifndef ARV_TESTS_LIVE_REDIS_H
#define ARV_TESTS_LIVE_REDIS_H

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];
static int port;
static pid_t server_pid = -1;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static bool port_open(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Starts redis-server on `port` (no persistence), with `password` if set. */
static void server_start(const char *password)
{
    char portstr[16], logpath[128];
    snprintf(portstr, sizeof(portstr), "%d", port);
    snprintf(logpath, sizeof(logpath), "%s/redis.log", tmpdir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* Never outlive the test, even if it crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (password)
            execl("/usr/bin/redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", tmpdir,
                  "--requirepass", password, (char *)NULL);
        else
            execl("/usr/bin/redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", tmpdir,
                  (char *)NULL);
        _exit(127);
    }
    server_pid = pid;
    for (int i = 0; i < 500 && !port_open(); i++)
        usleep(10000);
    cr_assert(port_open(), "redis-server did not start on port %d", port);
}

static void server_kill(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGCONT);
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
}

#endif
