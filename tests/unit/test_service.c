/* Unit tests for common/service.c: a stop signal that arrives while a daemon
 * starts (before its loop watches signals) is kept, then handled as a stop. */
#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "service.h"

/* In a child: signals held, SIGTERM raised during "start-up", then the service
 * set up and run: it must stop cleanly (exit 0), not die of the signal. */
Test(service, stop_signal_during_start_is_a_stop)
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct common_config common = {.env = "development",
                                       .listen = {.host = "127.0.0.1", .port = 0}};
        struct service svc;
        service_hold_signals();
        raise(SIGTERM); /* as if sent while the configuration loads */
        if (service_init(&svc, "arv-test", &common, NULL) < 0)
            _exit(3);
        int rc = service_run(&svc);
        service_deinit(&svc);
        _exit(rc == 0 ? 0 : 4);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status), "the child died of signal %d", WTERMSIG(status));
    cr_assert_eq(WEXITSTATUS(status), 0);
}
