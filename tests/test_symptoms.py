"""Plain words to symptom findings: the seed incident's phrases, fuzzy forms, negation, and
text that maps to nothing being reported back."""

from __future__ import annotations

import pytest

from prodx.engine.symptoms import match_symptoms
from prodx.model import FindingState


def _states(kb, *texts):
    findings, unmatched = match_symptoms(list(texts), kb)
    return {f.id: f.state for f in findings}, unmatched


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("login silently fails", "symptom.login_silent_fail"),
        ("Logins stopped working, the correct password just reloads the login page", "symptom.login_silent_fail"),
        ("the register page returns 503", "symptom.http_5xx"),
        ("whole site gives HTTP 500", "symptom.http_5xx"),
        ("Twig could not write to the cache folder", "symptom.cache_write_error"),
        ("Unable to write in the cache directory", "symptom.cache_write_error"),
        ("logs stopped updating", "symptom.logs_stopped"),
        ("the log is cut off mid-line", "symptom.log_cut_off"),
        ("clearing the cache helped for a while", "symptom.cache_clear_helped"),
        ("echo test > x fails: No space left on device", "symptom.no_space_error"),
        ("df -h shows 7.5G available", "symptom.df_shows_free"),
    ],
)
def test_symptom_seed_phrase_maps_to_present_finding(kb, text, fid):
    states, _ = _states(kb, text)
    assert states.get(fid) is FindingState.PRESENT


@pytest.mark.parametrize("text", ["no errors in the log", "the logs show nothing", "Nothing in the logs"])
def test_symptom_negated_log_errors_is_absent(kb, text):
    states, _ = _states(kb, text)
    assert states.get("symptom.log_errors") is FindingState.ABSENT


def test_symptom_negator_before_phrase_makes_it_absent(kb):
    states, _ = _states(kb, "uploads do not fail")
    assert states.get("symptom.upload_fails") is FindingState.ABSENT


def test_symptom_cannot_describes_the_failure_not_its_absence(kb):
    states, _ = _states(kb, "users cannot log in")
    assert states.get("symptom.login_silent_fail") is FindingState.PRESENT


def test_symptom_one_text_with_several_clauses_maps_each(kb):
    states, unmatched = _states(kb, "login silently fails; register returns 503 and logs stopped updating")
    assert {"symptom.login_silent_fail", "symptom.http_5xx", "symptom.logs_stopped"} <= set(states)
    assert unmatched == []


def test_symptom_unmatched_text_is_reported_back_with_nearest(kb):
    states, unmatched = _states(kb, "the moon is blue", "uploads keep failing")
    assert [u.text for u in unmatched] == ["the moon is blue"]
    assert states.get("symptom.upload_fails") is FindingState.PRESENT


def test_symptom_unmatched_clause_beside_a_matched_one_is_reported(kb):
    _, unmatched = _states(kb, "login silently fails and the office printer smells of burnt toast")
    assert any("printer" in u.text for u in unmatched)


# --- what a phrase list cannot say: errno, HTTP codes, quantities, time words, quotes ---------


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("mysqld: Can't read dir of '/tmp/' (Errcode: 13)", "symptom.permission_error"),
        ("connect() to 127.0.0.1:9000 failed (111: Connection refused)", "symptom.connection_refused"),
        ("Got error 28 from storage engine", "symptom.no_space_error"),
        ("write() returned EROFS", "symptom.readonly_error"),
        ("hitch: {backend-connect}: EADDRNOTAVAIL", "symptom.addr_not_avail"),
        ("OSError: [Errno 24] while opening the socket", "symptom.too_many_open_files"),
    ],
)
def test_symptom_errno_number_or_name_maps_to_its_strerror_symptom(kb, text, fid):
    states, _ = _states(kb, text)
    assert states.get(fid) is FindingState.PRESENT


@pytest.mark.parametrize(
    ("text", "specific"),
    [
        ("every client request gets HTTP 502", "symptom.http_502"),
        ("the forum answers 502 Bad Gateway", "symptom.http_502"),
        ("upstream timed out, users see 504", "symptom.http_504"),
        ("register page returns 503", "symptom.http_503"),
        ("nearly every page returns HTTP 500", "symptom.http_500"),
    ],
)
def test_symptom_http_code_maps_to_its_own_and_to_5xx(kb, text, specific):
    states, _ = _states(kb, text)
    assert states.get(specific) is FindingState.PRESENT
    assert states.get("symptom.http_5xx") is FindingState.PRESENT


@pytest.mark.parametrize("text", ["Per-user limit on the server: 512 processes", "ulimit -n is 500,000", "it took 503 ms"])
def test_symptom_number_with_a_unit_is_not_an_http_code(kb, text):
    states, _ = _states(kb, text)
    assert "symptom.http_5xx" not in states


@pytest.mark.parametrize(
    ("text", "fid", "state"),
    [
        ("uptime: load average 86.68, 45.05, 22.64", "symptom.high_load", FindingState.PRESENT),
        ("load went from 0.2 to 22", "symptom.high_load", FindingState.PRESENT),
        ("top shows 100% CPU", "symptom.cpu_high", FindingState.PRESENT),
        ("user CPU under 10%", "symptom.cpu_high", FindingState.ABSENT),
        ("I/O wait 93.6%", "symptom.disk_io_high", FindingState.PRESENT),
        ("RAM at only about 50%", "symptom.memory_high", FindingState.ABSENT),
        ("20 GB of 32 GB RAM in use", "symptom.memory_high", FindingState.ABSENT),
        ("memory at 97%", "symptom.memory_high", FindingState.PRESENT),
        ("df -ih: 1.6M inodes, 1.6M used, 8 free (100%)", "symptom.inodes_full", FindingState.PRESENT),
        ("/var has 0 bytes free", "symptom.no_space_error", FindingState.PRESENT),
        # A share of the disk that is free says it has room; so do hundreds of MB left.
        ("df showed about 70% of the disk free", "symptom.disk_space_ok", FindingState.PRESENT),
        ("df shows about 900 MB still free", "symptom.disk_space_ok", FindingState.PRESENT),
        ("only 5 MB left on /", "symptom.disk_space_ok", None),
        # A course over time: where it ended counts, and a climb is growth.
        ("40% RAM at launch; nine hours later about 60%, then it approaches 100%", "symptom.memory_high",
         FindingState.PRESENT),
        ("40% RAM at launch; nine hours later about 60%, then it approaches 100%", "symptom.memory_grows",
         FindingState.PRESENT),
        ("the disk was at 70%, then 85%, now at 97%", "symptom.disk_filling", FindingState.PRESENT),
        ("memory at 95% after the import, then 40% once it finished", "symptom.memory_high", FindingState.ABSENT),
    ],
)
def test_symptom_quantity_maps_to_what_it_means(kb, text, fid, state):
    states, _ = _states(kb, text)
    assert states.get(fid) is state


def test_symptom_small_load_denies_high_load(kb):
    states, _ = _states(kb, "load average 0.4, 0.3, 0.2")
    assert states.get("symptom.high_load") is FindingState.ABSENT


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("broken since the deploy on Friday", "symptom.after_deploy"),
        ("500s ever since we ran composer update", "symptom.after_upgrade"),
        ("It started following the PHP upgrade", "symptom.after_upgrade"),
        ("replication fails after moving tmpdir to a bigger volume", "symptom.after_config_change"),
        ("the maintainer had just pushed a small fix", "symptom.after_deploy"),
    ],
)
def test_symptom_time_words_map_to_the_change_they_name(kb, text, fid):
    states, _ = _states(kb, text)
    assert states.get(fid) is FindingState.PRESENT


def test_symptom_quoted_message_with_a_comma_matches_whole(kb):
    states, _ = _states(kb, 'the footer shows "Warning: open(/var/lib/php/sess_x, O_RDWR) failed: Read-only file system (30)"')
    assert states.get("symptom.readonly_error") is FindingState.PRESENT


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("every command prints -bash: fork: retry: Resource temporarily unavailable", "symptom.fork_failed"),
        ("nginx: accept4() failed (24: Too many open files)", "symptom.too_many_open_files"),
        ("kernel: nf_conntrack: table full, dropping packet", "symptom.packets_dropped"),
        ("curl: (6) Could not resolve host: api.example.com", "symptom.dns_error"),
        ("SQLSTATE[08004] [1040] Too many connections", "symptom.db_too_many_connections"),
        ("kernel: mysqld invoked oom-killer", "symptom.oom"),
        ("kernel: sd 1:0:0:0: [sdc] Unhandled error code", "symptom.io_error"),
        ("nginx: [emerg] unknown directive \"proxy_passs\"", "symptom.config_syntax"),
        ("Your Composer dependencies require a PHP version >= 8.1", "symptom.code_error"),
        ("WARNING: [pool www] server reached pm.max_children setting (5)", "symptom.worker_limit"),
        ("The VM is inaccessible; SSH cannot connect", "symptom.host_unresponsive"),
        ("Postgres won't start: bind() failed: Address already in use", "symptom.address_in_use"),
        ("clients get an empty reply from server", "symptom.connection_reset"),
        ("it works as root but not as www-data", "symptom.root_only_works"),
        ("Failed to write session data (files)", "symptom.session_write_error"),
    ],
)
def test_symptom_common_error_string_of_an_organ_maps(kb, text, fid):
    states, _ = _states(kb, text)
    assert states.get(fid) is FindingState.PRESENT


def test_symptom_denial_after_the_phrase_makes_it_absent(kb):
    states, _ = _states(kb, "only 20 GB of 32 GB used, so heavy swapping makes no sense")
    assert states.get("symptom.swapping") is FindingState.ABSENT


def test_symptom_later_clause_overrides_an_earlier_one(kb):
    states, _ = _states(kb, "we had DDoS attempts before, but there was no burst of connections this time")
    assert states.get("symptom.traffic_spike") is FindingState.ABSENT


@pytest.mark.parametrize(
    ("text", "fid"),
    [
        ("From about 03:38 nearly every page returns HTTP 500", "symptom.getting_worse"),
        ("the database and the caching service crashed", "symptom.intermittent"),
        ("The site had DDoS attempts, no burst of external connections this time", "symptom.connection_timeout"),
    ],
)
def test_symptom_look_alike_words_do_not_map(kb, text, fid):
    states, _ = _states(kb, text)
    assert fid not in states


def test_symptom_some_is_a_meaningful_word_not_a_stopword(kb):
    some, _ = _states(kb, "some clients fail")
    every, _ = _states(kb, "every client request fails")
    assert some.get("symptom.intermittent") is FindingState.PRESENT
    assert "symptom.intermittent" not in every


@pytest.mark.parametrize("text", ["The MySQL service keeps stopping", "the app keeps going down",
                                  "php-fpm keeps crashing every few hours"])
def test_symptom_something_that_keeps_failing_is_recurring(kb, text):
    states, _ = _states(kb, text)
    assert states.get("symptom.recurring") is FindingState.PRESENT


def test_symptom_quantity_examples_in_the_docstrings_hold():
    import doctest

    import prodx.engine.symptoms

    failures, tried = doctest.testmod(prodx.engine.symptoms)
    assert tried > 0 and failures == 0


@pytest.mark.parametrize(
    ("text", "fid", "state"),
    [
        # "slow, CPU" holds the letters of "low cpu", not its words.
        ("the VPS gets slow, CPU load goes through the roof", "symptom.cpu_high", None),
        ("cpu is low", "symptom.cpu_high", FindingState.ABSENT),
        # A response that "came back as 502" is an answer, not a recurrence.
        ("Requests came back as 502 instead of the expected status", "symptom.recurring", None),
        ("the problem came back", "symptom.recurring", FindingState.PRESENT),
        ("this is the first time", "symptom.recurring", FindingState.ABSENT),
        ("down again, and not for the first time", "symptom.recurring", FindingState.PRESENT),
        ("a bigger instance did not stop it recurring", "symptom.recurring", FindingState.PRESENT),
        ("it is not recurring", "symptom.recurring", FindingState.ABSENT),
        ("commands print a complaint about read-only access", "symptom.readonly_error", FindingState.PRESENT),
        # A process that drives the CPU to full fills no drive.
        ("a process called kdevtmpfsi drives the CPU to full", "symptom.no_space_error", None),
        ("a process called kdevtmpfsi drives the CPU to full", "symptom.cpu_high", FindingState.PRESENT),
        ("the backup drive is full", "symptom.no_space_error", FindingState.PRESENT),
        ("MariaDB stops once a day and the sites lose their database", "symptom.periodic", FindingState.PRESENT),
        ("MariaDB stops once a day and the sites lose their database", "symptom.db_error", FindingState.PRESENT),
        # "starts failing" says something began; nothing failed to start.
        ("A storage server backed by S3 starts failing requests", "symptom.service_wont_start", None),
        ("nginx fails to start", "symptom.service_wont_start", FindingState.PRESENT),
        # A clock that is minutes slow is an offset, not a slow site.
        ("the server's clock is just over 15 minutes slow", "symptom.slow", None),
        ("the server's clock is just over 15 minutes slow", "symptom.clock_wrong", FindingState.PRESENT),
        ("pages take 10 seconds to load", "symptom.slow", FindingState.PRESENT),
        # A restart after which it works again was the remedy, not the onset.
        ("After a server restart it works again", "symptom.after_reboot", FindingState.ABSENT),
        ("it broke after the reboot", "symptom.after_reboot", FindingState.PRESENT),
        # "Off and on" is intermittent; only turning a machine off and on is a power cycle.
        ("the errors are intermittent, on and off", "symptom.restart_helped", None),
        ("the errors are intermittent, on and off", "symptom.intermittent", FindingState.PRESENT),
        ("restarting the server makes it fast again", "symptom.restart_helped", FindingState.PRESENT),
        ("every attempt came back with an Unauthorized error", "symptom.recurring", None),
        ("after the resize the errors came back", "symptom.recurring", FindingState.PRESENT),
        # Broken right after a cache clear is the clear's doing, not a clear that helped.
        ("A critical error occurred after cache:clear", "symptom.cache_clear_helped", None),
        ("A critical error occurred after cache:clear", "symptom.recent_permission_change", FindingState.PRESENT),
        ("after clearing the cache everything works again", "symptom.cache_clear_helped", FindingState.PRESENT),
        # A huge number counts things; a load balancer is not a load average.
        ("the access log showed a huge number of requests", "symptom.log_hog", None),
        ("the access log showed a huge number of requests", "symptom.traffic_spike", FindingState.PRESENT),
        ("the log file is huge", "symptom.log_hog", FindingState.PRESENT),
        ("requests took 12 seconds, the load balancer timing out at 30s", "symptom.high_load", None),
        # A quoted message denied by the word before it.
        ('No "Cannot assign requested address" errors in any log', "symptom.addr_not_avail", FindingState.ABSENT),
        ('syslog shows "Cannot assign requested address"', "symptom.addr_not_avail", FindingState.PRESENT),
        ("No, login does not work", "symptom.login_silent_fail", FindingState.PRESENT),
        # Healthy verdicts said after the fact.
        ("The pool has idle workers; max_children is never reached", "symptom.worker_limit", FindingState.ABSENT),
        ("Swap is 0 B used and vmstat si/so are zero", "symptom.swapping", FindingState.ABSENT),
        ("iowait is near zero", "symptom.disk_io_high", FindingState.ABSENT),
        ("lsof +L1 returns nothing", "symptom.deleted_open", FindingState.ABSENT),
        ("du and df match within a few hundred MB", "symptom.du_df_disagree", FindingState.ABSENT),
        # A phrase's "not" stays on its side of the word it denies.
        ("Load isn't elevated at all", "symptom.site_down", None),
        ("the page is not loading at all", "symptom.site_down", FindingState.PRESENT),
        ("The requested URL /a.php was not found on this server", "symptom.dns_error", None),
        ("the DNS says host not found", "symptom.dns_error", FindingState.PRESENT),
        ('haproxy: Connect() failed for backend socket: no free ports', "symptom.addr_not_avail", FindingState.PRESENT),
        # A phrase's own fillers ("still") buy no extra words between its words.
        ("The site uses an old PHP framework the owner is still migrating away from", "symptom.config_not_applied", None),
        ("phpinfo still uses the old value", "symptom.config_not_applied", FindingState.PRESENT),
        # A host name is one word, however many dots it has.
        ("python requests: \"hostname 'api.example.org' doesn't match 'old.example.org'\"", "symptom.cert_name_mismatch",
         FindingState.PRESENT),
        # EROFS's message is not a failing disk.
        ("open(/var/lib/php/sess_x, O_RDWR) failed: Read-only file system (30)", "symptom.io_error", None),
        ("open(/var/lib/php/sess_x, O_RDWR) failed: Read-only file system (30)", "symptom.readonly_error",
         FindingState.PRESENT),
        ("processes use only 30% of RAM", "symptom.process_cpu_hog", None),
        ("requesting a new certificate still failed", "symptom.cert_renewal_failed", FindingState.PRESENT),
        ("certbot renewed fine", "symptom.cert_renewal_failed", FindingState.ABSENT),
        ("No packages changed; the last apt upgrade was a month ago", "symptom.after_upgrade", FindingState.ABSENT),
        ("it broke after the apt upgrade", "symptom.after_upgrade", FindingState.PRESENT),
        # Causes outside the catalogue are said too.
        ("visitors from Google are redirected to a spam site; the site was hacked", "symptom.compromised", FindingState.PRESENT),
        ("dmesg shows soft lockups, and the BMC logged a failing DIMM", "symptom.hardware_fault", FindingState.PRESENT),
        ("Cloudflare had a global outage at the time", "symptom.provider_outage", FindingState.PRESENT),
        # A failing RAID controller is storage; a failing DIMM is not.
        ("the RAID controller logged a fault", "symptom.io_error", FindingState.PRESENT),
        ("the RAID controller logged a fault", "symptom.hardware_fault", None),
        ("Services down from 2:02am to 9:46am", "symptom.site_down", FindingState.PRESENT),
        ("the provider's status page shows no incident", "symptom.provider_outage", FindingState.ABSENT),
        # A word class is named as the lexicon names it, even where a term would rewrite the word.
        ("the ssl expired", "symptom.cert_expired", FindingState.PRESENT),
        ("the certificate is still valid until March", "symptom.cert_expired", FindingState.ABSENT),
        ("The certificate itself is far from its expiry date", "symptom.cert_expired", FindingState.ABSENT),
        # Two words the lexicon knows are never each other's typo.
        ("disk filling up fast", "symptom.io_error", None),
        ("the disk is failling", "symptom.io_error", FindingState.PRESENT),
        # An operator's reading of what a probe measures states the probe's finding.
        ("chronyc says the clock is not synchronised", "clock.unsynchronised", FindingState.PRESENT),
        ("timedatectl: System clock synchronized: no", "clock.unsynchronised", FindingState.PRESENT),
        ("timedatectl: System clock synchronized: yes", "clock.unsynchronised", FindingState.ABSENT),
        ("45 minutes of downtime", "symptom.site_down", FindingState.PRESENT),
        ("the journal showed nothing", "symptom.log_errors", FindingState.ABSENT),
        ("the update failed for lack of free space", "symptom.no_space_error", FindingState.PRESENT),
        ("a strange process was using all CPU", "symptom.unknown_process", FindingState.PRESENT),
        ("restarting PHP makes it fine again", "symptom.restart_helped", FindingState.PRESENT),
        ("the server had run out of OS storage space", "symptom.no_space_error", FindingState.PRESENT),
        ("we are running out of disk space", "symptom.disk_filling", FindingState.PRESENT),
        ('rm * gave "bash: /bin/rm: Argument list too long"', "symptom.many_files", FindingState.PRESENT),
        ("it ends with an OutOfMemoryException", "symptom.oom", FindingState.PRESENT),
        ("Killing the process that uses the most CPU has been done several times", "symptom.oom", None),
        ("The memory held by the app server keeps growing while it runs", "symptom.memory_grows", FindingState.PRESENT),
        ("the heap size was increased to 4 GB", "symptom.memory_grows", None),
        ("Restarting the server process releases the memory", "symptom.restart_helped", FindingState.PRESENT),
        ("The MySQL process was consuming a large share of the system RAM", "symptom.memory_high", FindingState.PRESENT),
        ("CPU consumption stays high", "symptom.cpu_high", FindingState.PRESENT),
        ("the binary turned out to be xmr-stak", "symptom.unknown_process", FindingState.PRESENT),
        # An application that hangs is not a host that froze; concurrency is not a schedule.
        ("clicking around makes Nextcloud hang for 20 seconds", "symptom.host_unresponsive", None),
        ("MariaDB is configured to accept 8 connections at the same time", "symptom.periodic", None),
        ("Multiple instances of cron.php are running at the same time", "workload.cron_overlap", FindingState.PRESENT),
        ("https://www.example.org loads fine", "symptom.high_load", None),
        ('loading any site gives "502 Bad Gateway"', "symptom.site_down", None),
        ('Certificate shown as expired: "Not After 16/09/2020"', "symptom.cert_expired", FindingState.PRESENT),
        ("clients receive the *.example.com certificate, which does not cover that name",
         "symptom.cert_name_mismatch", FindingState.PRESENT),
        ("A `vagrant reload` makes it go away", "symptom.restart_helped", FindingState.PRESENT),
        ("Restarting the web app fixed it", "symptom.restart_helped", FindingState.PRESENT),
        ("Switching the port back to 9080 makes the site work again", "symptom.rollback_helped", FindingState.PRESENT),
        ("apache had no permission to access the data directory", "symptom.permission_error", FindingState.PRESENT),
        ("Table './shop/orders' is marked as crashed and last (automatic?) repair failed", "symptom.service_crashed", None),
        ("the uptime monitor detected 502 errors on the site", "symptom.http_502", FindingState.PRESENT),
        ("The server's CPU, memory and disk usage were all normal", "symptom.cpu_high", FindingState.ABSENT),
        ("On-call checked databases, CPU and memory: all normal", "symptom.memory_high", FindingState.ABSENT),
        ("/var was low on available i-nodes", "symptom.inodes_full", FindingState.PRESENT),
        ('the mail server answered 452 "4.3.1 Insufficient system storage"', "symptom.no_space_error", FindingState.PRESENT),
        ("the worker died with signal 137", "symptom.oom", FindingState.PRESENT),
        ('Admin dashboard: "No Sidekiq process running for the scheduler"', "symptom.service_not_running",
         FindingState.PRESENT),
        ("hundreds of customers arrived at once", "symptom.traffic_spike", FindingState.PRESENT),
        ("nothing had been deployed that week", "symptom.after_deploy", FindingState.ABSENT),
        ("the st column stays at 0 in vmstat", "cpu.steal_high", FindingState.ABSENT),
        ("nginx -t says syntax is ok and the test is successful", "symptom.config_syntax", FindingState.ABSENT),
        ("binlogs are purged after 3 days, they're tiny", "symptom.db_hog", FindingState.ABSENT),
        ("The pages come back with status 200", "symptom.http_5xx", FindingState.ABSENT),
        ("No permission errors in any log", "symptom.permission_error", FindingState.ABSENT),
        ("there were no session warnings in the php error log", "symptom.session_write_error", FindingState.ABSENT),
        ('Unpacking the package... Could not create directory.', "symptom.permission_error", FindingState.PRESENT),
        ("WordPress asks for FTP credentials to install plugins", "symptom.permission_error", FindingState.PRESENT),
        ('The installation shows "Whoops, looks like something went wrong"', "symptom.http_500", FindingState.PRESENT),
        ("The machine's load average keeps rising until it slows to a crawl", "symptom.memory_grows", None),
        ("a process keeps 4 threads at 100% CPU", "symptom.process_cpu_hog", FindingState.PRESENT),
        ("nslookup says \"*** Can't find api.example.org: No answer\"", "symptom.dns_error", FindingState.PRESENT),
        ("Following a setup guide, restarting nginx ends with an error", "symptom.after_config_change", FindingState.PRESENT),
        ("the correct password just clears the fields and shows the login screen again", "symptom.login_silent_fail",
         FindingState.PRESENT),
        # A requirement or a first belief is not a reading.
        ("Discourse needs at least 5 GB free to update", "symptom.disk_space_ok", None),
        ("The admin first believed the partition was running out of space", "symptom.disk_filling", None),
        # Someone's advice or first instinct is not a reading either.
        ("The maintainer suggested a damaged filesystem and asked to check free space", "symptom.io_error", None),
        ("First instinct was that the box had been hacked", "symptom.compromised", None),
        ("Unsure whether this is a software or a hardware problem", "symptom.hardware_fault", None),
        # The second alternative of "A or is B" is not said; the first is.
        ("x509: certificate has expired or is not yet valid", "symptom.clock_wrong", None),
        ("x509: certificate has expired or is not yet valid", "symptom.cert_expired", FindingState.PRESENT),
        ("logins or uploads fail since this morning", "symptom.upload_fails", FindingState.PRESENT),
        # Function words share no meaning with a finding, however rare they are in the catalogue.
        ("so something broke between the two commits", "symptom.clock_wrong", None),
        ("only a very small amount of data goes into it", "symptom.readonly_error", None),
        # A URL's words are not the speaker's ("wiki" there is not documentation).
        ("https://wiki.example.org instead gives SSL_ERROR_BAD_CERT_DOMAIN", "symptom.cert_name_mismatch",
         FindingState.PRESENT),
        # "mysqld log:" names where the line was read; the log did not fill the disk.
        ("mysqld log: [Warning] mysqld: Disk is full writing '/var/lib/mysql/tmp/#sql_1.MAD'", "symptom.log_hog", None),
        ("they use 500-1000 MiB since the update", "symptom.http_500", None),
        ("According to df the host still had 1.7T of free space", "symptom.disk_space_ok", FindingState.PRESENT),
        ("2GB were really free but df showed 0% available", "symptom.no_space_error", FindingState.PRESENT),
        ('the log is full of "too many files opened"', "symptom.too_many_open_files", FindingState.PRESENT),
        ("Tautulli's memory use steadily climbs over time to 120GB", "symptom.disk_filling", None),
        ("a dyno now and then gets stuck at 100% CPU", "symptom.hardware_fault", None),
    ],
)
def test_symptom_words_say_what_they_mean_not_what_they_contain(kb, text, fid, state):
    """Look-alike wordings, denials and healthy verdicts (None: the finding is not stated)."""
    states, _ = _states(kb, text)
    assert states.get(fid) is state
