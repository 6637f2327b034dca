package logind

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// ErrUnavailable means there is no logind to ask: no system bus, or
// nobody owns org.freedesktop.login1 on it. Test with errors.Is.
var ErrUnavailable = errors.New("logind: not available")

// DefaultSystemBus is the system bus address used when neither
// Config.Address nor $DBUS_SYSTEM_BUS_ADDRESS says otherwise.
const DefaultSystemBus = "unix:path=/run/dbus/system_bus_socket"

// Well-known names of logind's D-Bus API.
const (
	BusName          = "org.freedesktop.login1"
	ManagerPath      = dbus.ObjectPath("/org/freedesktop/login1")
	ManagerInterface = "org.freedesktop.login1.Manager"
	SessionInterface = "org.freedesktop.login1.Session"
)

// Config configures a Client. The zero value (and nil) asks the system
// bus with a 2-second timeout per question.
type Config struct {
	// Address is the D-Bus address of the bus logind is on; "" means
	// $DBUS_SYSTEM_BUS_ADDRESS, else DefaultSystemBus.
	Address string
	// Timeout bounds one question (connecting included); default 2s.
	Timeout time.Duration
}

// Presence is what logind says about one uid's sessions.
type Presence struct {
	// Active: the uid has an active local session (Active, not Remote)
	// on a seat or not.
	Active bool
	// Seat: one of those active local sessions is attached to a seat
	// (a physical console: "seat0").
	Seat bool
	// Sessions are the ids of the uid's active local sessions.
	Sessions []string
}

// Client asks logind. Create it with New; Close it when done. Safe for
// concurrent use.
type Client struct {
	addr    string
	timeout time.Duration

	mu   sync.Mutex
	conn *dbus.Conn
}

// New returns a Client for cfg (nil means defaults). It does not connect
// yet: the first question does.
func New(cfg *Config) *Client {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Address == "" {
		c.Address = os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	}
	if c.Address == "" {
		c.Address = DefaultSystemBus
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	return &Client{addr: c.Address, timeout: c.Timeout}
}

// Address returns the bus address the Client asks.
func (c *Client) Address() string { return c.addr }

// Close drops the bus connection. Idempotent and nil-safe; a later
// question reconnects.
func (c *Client) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// connect returns the bus connection, dialling it when needed.
func (c *Client) connect(ctx context.Context) (*dbus.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.conn.Connected() {
		return c.conn, nil
	}
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	conn, err := dbus.Connect(c.addr, dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: bus %s: %v", ErrUnavailable, c.addr, err)
	}
	c.conn = conn
	return conn, nil
}

// drop forgets conn after an error that may mean the bus went away.
func (c *Client) drop(conn *dbus.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		c.conn.Close()
		c.conn = nil
	}
}

// Presence asks logind about uid's sessions. ErrUnavailable (wrapped, with
// the reason) when there is no logind to ask; other errors when logind
// answered something unexpected.
func (c *Client) Presence(ctx context.Context, uid uint32) (Presence, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return Presence{}, err
	}
	p, err := presence(ctx, conn, uid)
	if err != nil {
		var de dbus.Error
		if errors.As(err, &de) && isAbsent(de.Name) {
			return Presence{}, fmt.Errorf("%w: %s is not on bus %s (%s)", ErrUnavailable, BusName, c.addr, de.Name)
		}
		if !errors.As(err, &de) {
			// Transport trouble: reconnect next time.
			c.drop(conn)
			if !conn.Connected() {
				return Presence{}, fmt.Errorf("%w: bus %s: %v", ErrUnavailable, c.addr, err)
			}
		}
		return Presence{}, fmt.Errorf("logind: %w", err)
	}
	return p, nil
}

func isAbsent(name string) bool {
	return name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
		name == "org.freedesktop.DBus.Error.NameHasNoOwner"
}

// session is one entry of Manager.ListSessions: a(susso).
type session struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

func presence(ctx context.Context, conn *dbus.Conn, uid uint32) (Presence, error) {
	var list []session
	mgr := conn.Object(BusName, ManagerPath)
	if err := mgr.CallWithContext(ctx, ManagerInterface+".ListSessions", 0).Store(&list); err != nil {
		return Presence{}, err
	}
	var p Presence
	for _, s := range list {
		if s.UID != uid {
			continue
		}
		var props map[string]dbus.Variant
		obj := conn.Object(BusName, s.Path)
		if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, SessionInterface).Store(&props); err != nil {
			var de dbus.Error
			if errors.As(err, &de) && strings.HasPrefix(de.Name, "org.freedesktop.login1.") || errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.UnknownObject" {
				continue // the session ended between the two calls
			}
			return Presence{}, err
		}
		active, _ := props["Active"].Value().(bool)
		remote, _ := props["Remote"].Value().(bool)
		if !active || remote {
			continue
		}
		p.Active = true
		p.Sessions = append(p.Sessions, s.ID)
		if s.Seat != "" {
			p.Seat = true
		}
	}
	return p, nil
}
