package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heapd/heapd/client"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/units"
)

// ledgerOutput is what `heapctl ledger` prints.
type ledgerOutput struct {
	AdminSocket string               `json:"admin_socket"`
	Buffers     []daemon.LedgerEntry `json:"buffers"`
}

func ledgerCmd(g *globals) *cobra.Command {
	var admin string
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "List the live buffers heapd charges, with owner, heap, size, age and holders (root)",
		Long: `ledger asks heapd, over its admin socket (the main socket's path plus
".admin", readable by root and heapd's own user only), for every buffer it
has handed out that some process still holds or maps: the uid it is
charged to, the process that asked for it, the heap, the size, how long
ago, how many references the kernel counts besides heapd's own (fds,
mappings, fds in flight, device imports; "-" for emulated buffers, where
the kernel keeps no count) and which processes hold an fd or a mapping.`,
		Example: `  sudo heapctl ledger
  sudo heapctl ledger -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if admin == "" {
				admin = (&client.Client{}).SocketPath() + daemon.AdminSuffix
			}
			g.logger().Info("asking heapd's admin socket", "path", admin)
			es, err := fetchLedger(cmd.Context(), admin)
			if err != nil {
				return err
			}
			out := ledgerOutput{AdminSocket: admin, Buffers: es}
			return g.emit(out, func(w io.Writer) error { return ledgerTable(w, out, time.Now()) })
		},
	}
	cmd.Flags().StringVar(&admin, "admin-socket", "", "heapd's admin socket (default: $HEAPD_SOCKET or /run/heapd/socket, plus .admin)")
	return cmd
}

// fetchLedger asks heapd's admin socket at path for its live buffers.
func fetchLedger(ctx context.Context, path string) ([]daemon.LedgerEntry, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%s: permission denied: heapctl ledger needs root (or heapd's own user)", path)
		}
		return nil, fmt.Errorf("heapd's admin socket: %w (is heapd running? --admin-socket names another)", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := io.WriteString(c, `{"request":"ledger"}`+"\n"); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return nil, fmt.Errorf("heapd's admin socket: %w", err)
	}
	var rep daemon.AdminReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, fmt.Errorf("heapd's admin socket: malformed reply: %w", err)
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("heapd: %s", rep.Error)
	}
	if !rep.Accounted {
		return nil, errors.New("this heapd has no ledger that follows buffers")
	}
	return rep.Buffers, nil
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

func ledgerTable(w io.Writer, out ledgerOutput, now time.Time) error {
	if len(out.Buffers) == 0 {
		fmt.Fprintln(w, "no live buffers")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tASKED BY\tHEAP\tSIZE\tAGE\tREFS\tHOLDERS")
	type total struct{ bytes, n int64 }
	totals := map[uint32]*total{}
	for _, e := range out.Buffers {
		refs := "-"
		if e.References >= 0 {
			refs = strconv.FormatInt(e.References, 10)
		}
		var hs []string
		for _, h := range e.Holders {
			var parts []string
			if h.FDs > 0 {
				parts = append(parts, plural(h.FDs, "fd"))
			}
			if h.Maps > 0 {
				parts = append(parts, plural(h.Maps, "map"))
			}
			hs = append(hs, fmt.Sprintf("%d %s (%s)", h.PID, h.Comm, strings.Join(parts, ", ")))
		}
		holders := strings.Join(hs, ", ")
		if holders == "" {
			holders = "none visible (fds in flight or a device import)"
		}
		heapName := e.Heap
		if e.Emulated {
			heapName += " (emulated)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d %s\t%s\t%s\t%s\t%s\t%s\n", e.ID, userName(e.UID), e.PID, e.Comm, heapName,
			units.FormatSize(e.Size), now.Sub(e.Created).Round(time.Second), refs, holders)
		t := totals[e.UID]
		if t == nil {
			t = &total{}
			totals[e.UID] = t
		}
		t.bytes += e.Size
		t.n++
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	uids := make([]uint32, 0, len(totals))
	for uid := range totals {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	fmt.Fprintln(w)
	for _, uid := range uids {
		fmt.Fprintf(w, "%s: %s in %s\n", userName(uid), units.FormatSize(totals[uid].bytes), plural(int(totals[uid].n), "buffer"))
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
