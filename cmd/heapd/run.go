package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/ledger"
	"github.com/heapd/heapd/internal/logind"
	"github.com/heapd/heapd/internal/metrics"
	"github.com/heapd/heapd/internal/policy"
)

const usage = `usage: heapd [flags]

heapd hands DMA-BUF file descriptors to unprivileged clients over a
SOCK_SEQPACKET Unix socket, after identifying them from the socket.

It listens on --socket, or on the socket systemd passes (socket activation,
ListenSequentialPacket=), and runs in the foreground. Under systemd it
reports READY=1 and STOPPING=1; elsewhere (openrc, runit, a container) it
just runs. SIGTERM or SIGINT: stop accepting, finish requests in progress,
exit. SIGHUP: re-discover heaps and tell subscribed clients, and re-read
the policy file (a file that does not parse is logged and the policy in
force stays).

Policy: --config FILE (default /etc/heapd/heapd.toml). When the default
file does not exist heapd runs with the built-in default policy (the same
as contrib/heapd.toml) and says so in its log; a file given with --config
must exist. --check-config FILE checks a policy file, prints the policy it
means and exits. docs/policy.md describes the file.

A second socket, the main one's path plus ".admin" (mode 0600), serves
root and heapd's own user: heapctl ledger lists live buffers through it.

examples:
  heapd                                        # /run/heapd/socket, /etc/heapd/heapd.toml
  heapd --socket /tmp/heapd.sock --config ./heapd.toml --log-level debug
  heapd --metrics-listen 127.0.0.1:9464        # Prometheus metrics at /metrics
  heapd --metrics-listen unix:/run/heapd/metrics --log-format json
  heapd --check-config /etc/heapd/heapd.toml   # check a policy file and exit

flags:
`

// buildVersion is stamped at link time by `make dist`
// (-X main.buildVersion=...); empty in plain builds.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return "heapd " + buildVersion
	}
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	return "heapd " + v
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("heapd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		socket      = fs.String("socket", daemon.DefaultSocket, "socket `path` (ignored under socket activation)")
		logLevel    = fs.String("log-level", "info", "log `level`: debug, info, warn or error")
		maxConns    = fs.Int("max-connections", 256, "most open connections")
		maxPerUID   = fs.Int("max-connections-per-uid", 64, "most open connections of one uid")
		maxInFlight = fs.Int("max-inflight", 4, "most requests in progress per connection")
		handshakeTO = fs.Duration("handshake-timeout", 10*time.Second, "how long a new connection may take to send Hello before it is closed")
		writeTO     = fs.Duration("write-timeout", 5*time.Second, "how long a reply may wait for a client that stopped reading before it is disconnected")
		showVersion = fs.Bool("version", false, "print the version and exit")
		config      = fs.String("config", policy.DefaultPath, "policy `file`")
		checkConfig = fs.String("check-config", "", "check the policy `file`, print the effective policy and exit")
		logFormat   = fs.String("log-format", "text", "log `format`: text (logfmt) or json")
		metricsAddr = fs.String("metrics-listen", "", "serve Prometheus metrics on `addr`: host:port or unix:/path (off when empty)")
		hotplug     = fs.String("hotplug", "auto", "how to follow devices coming and going: `auto` (netlink uevents, else inotify), netlink, inotify or off")
	)
	poolOpts := addPoolFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see heapd --help)", fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, version())
		return nil
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"handshake-timeout", *handshakeTO}, {"write-timeout", *writeTO}} {
		if d.v <= 0 {
			return fmt.Errorf("--%s %v: must be positive (for example 10s)", d.name, d.v)
		}
	}
	if _, err := poolOpts.config(); err != nil {
		return err
	}
	if *checkConfig != "" {
		p, err := loadPolicy(*checkConfig)
		if err != nil {
			return err
		}
		return p.Format(stdout)
	}
	explicitConfig := false
	fs.Visit(func(f *flag.Flag) { explicitConfig = explicitConfig || f.Name == "config" })
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	// nil (metrics off) is a valid *Metrics: every method does nothing.
	var met *metrics.Metrics
	if *metricsAddr != "" {
		met = metrics.New(&metrics.Config{Version: version()})
	}

	pol, polSource, err := startPolicy(*config, explicitConfig, log)
	if err != nil {
		return err
	}

	// SIGHUP before anything slow, so an early one is not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ln, err := daemon.Activated()
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = daemon.Listen(*socket, log); err != nil {
			return err
		}
	}
	defer ln.Close()
	where := ln.Path
	if ln.Activated {
		where = "socket passed by systemd"
	}

	// Listen for device events before the first discovery, so a device
	// that comes or goes in between is not missed.
	events, err := openHotplug(*hotplug, log)
	if err != nil {
		return err
	}
	defer events.Close()

	reg, err := heap.Open(&heap.Config{Logger: log})
	if err != nil {
		return err
	}
	defer reg.Close()
	sessions := logind.New(&logind.Config{Address: pol.LogindBus, Timeout: pol.LogindTimeout})
	defer sessions.Close()
	auth := policy.NewAuthorizer(pol, &policy.Config{Logger: log, Sessions: sessions, DaemonUID: uint32(os.Getuid())})
	lcfg := &ledger.Config{Interval: pol.ReleaseInterval, Logger: log}
	if met != nil {
		// heapd_live_*: the ledger says when a buffer is charged and
		// when it is really freed (no process holds or maps it).
		lcfg.OnCharge = met.LiveBuffers
	}
	led := ledger.New(lcfg)
	defer led.Close()
	met.SetHeapSource(reg.List)
	met.SetQuotaSource(func() []metrics.QuotaUse { return quotaUses(led.Quotas()) })
	if events != nil {
		met.SetUeventSource(events.Stats)
	}
	heaps, stopPool, err := poolOpts.wrap(reg, met, log)
	if err != nil {
		return err
	}
	defer stopPool()
	srv, err := daemon.New(daemon.Config{
		Heaps:            heaps,
		Metrics:          met,
		Logger:           log,
		Authorizer:       auth,
		Ledger:           led,
		Version:          version(),
		MaxConns:         *maxConns,
		MaxConnsPerUID:   *maxPerUID,
		MaxInFlight:      *maxInFlight,
		HandshakeTimeout: *handshakeTO,
		WriteTimeout:     *writeTO,
		Stopping: func() {
			log.Info("stopping: finishing requests in progress")
			if _, err := daemon.Notify("STOPPING=1"); err != nil {
				log.Warn("sd_notify failed", "err", err)
			}
		},
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	hctx, stopHup := context.WithCancel(ctx)
	defer stopHup()
	if events != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			followDevices(hctx, events, srv, log)
		}()
	}
	if *metricsAddr != "" {
		mln, err := metrics.Listen(*metricsAddr)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		log.Info("metrics: serving", "addr", *metricsAddr, "path", metrics.Path)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := met.Serve(hctx, mln); err != nil {
				log.Error("metrics: server failed", "err", err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: re-discovering heaps")
				if err := srv.Rescan(); err != nil {
					log.Error("re-discovering heaps failed", "err", err)
				}
				reloadPolicy(auth, polSource, log)
			case <-hctx.Done():
				return
			}
		}
	}()

	adminPath := ""
	if ln.Activated {
		if a, ok := ln.Addr().(*net.UnixAddr); ok && strings.HasPrefix(a.Name, "/") {
			adminPath = a.Name + daemon.AdminSuffix
		}
	} else {
		adminPath = ln.Path + daemon.AdminSuffix
	}
	if adminPath != "" {
		if aln, err := daemon.ListenAdmin(adminPath); err != nil {
			log.Warn("no admin socket: heapctl ledger will not work", "path", adminPath, "err", err)
		} else {
			actx, stopAdmin := context.WithCancel(ctx)
			defer stopAdmin()
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := srv.ServeAdmin(actx, aln); err != nil {
					log.Error("admin socket failed", "err", err)
				}
			}()
		}
	}

	var names []string
	for _, h := range reg.List() {
		names = append(names, h.Name)
	}
	log.Info("serving", "version", version(), "socket", where, "heaps", strings.Join(names, ","), "pid", os.Getpid(),
		"policy", pol.Source, "rules", len(pol.Rules), "release_interval", pol.ReleaseInterval)
	if _, err := daemon.Notify("READY=1\nSTATUS=serving on " + where); err != nil {
		log.Warn("sd_notify failed", "err", err)
	}
	err = srv.Serve(ctx, ln.UnixListener)
	stopHup()
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// loadPolicy reads and parses the policy file at path.
func loadPolicy(path string) (*policy.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return policy.Parse(data, &policy.ParseOptions{Source: path})
}

// startPolicy loads the policy heapd starts with, and returns the file to
// re-read on SIGHUP ("" for the built-in default). A missing default file
// means the built-in default policy; a missing file named with --config,
// an unreadable file or one that does not parse is an error: heapd does
// not start with a policy other than the one it was given.
func startPolicy(path string, explicit bool, log *slog.Logger) (*policy.Policy, string, error) {
	p, err := loadPolicy(path)
	switch {
	case err == nil:
	case !explicit && errors.Is(err, fs.ErrNotExist):
		log.Info("no policy file: using the built-in default policy (the same as contrib/heapd.toml; heapd --check-config shows a file's effect)", "missing", path)
		p, path = policy.Default(nil), ""
	default:
		return nil, "", err
	}
	for _, w := range p.Warnings {
		log.Warn("policy: " + w)
	}
	return p, path, nil
}

// reloadPolicy re-reads source on SIGHUP; on error the policy in force
// stays.
func reloadPolicy(auth *policy.Authorizer, source string, log *slog.Logger) {
	if source == "" {
		log.Info("SIGHUP: the built-in default policy stays (no policy file)")
		return
	}
	p, err := loadPolicy(source)
	if err != nil {
		log.Error("SIGHUP: policy not reloaded: the old one stays in force", "err", err)
		return
	}
	old := auth.Policy()
	for _, w := range p.Warnings {
		log.Warn("policy: " + w)
	}
	if p.ReleaseInterval != old.ReleaseInterval || p.LogindBus != old.LogindBus || p.LogindTimeout != old.LogindTimeout {
		log.Warn("SIGHUP: release_interval and [logind] bus and timeout take effect at the next start")
	}
	auth.SetPolicy(p)
	log.Info("SIGHUP: policy reloaded", "policy", p.Source, "rules", len(p.Rules))
}

// quotaUses turns the ledger's quota use into heapd_quota_* rows.
func quotaUses(qs []ledger.QuotaUse) []metrics.QuotaUse {
	out := make([]metrics.QuotaUse, len(qs))
	for i, q := range qs {
		out[i] = metrics.QuotaUse{
			UID: q.UID, Class: q.Class, Bytes: q.Bytes, Buffers: q.Buffers,
			LimitBytes: q.Limit.Bytes, LimitBuffers: q.Limit.Buffers,
		}
	}
	return out
}
