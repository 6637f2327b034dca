package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ModulesEnv names the directory of the VM tier's kernel modules (.ko);
// the guest /init sets it.
const ModulesEnv = "HEAPD_VM_MODULES"

// ModuleParams returns a loaded module's readable parameters as
// "name=value ..." so it can be loaded again the same way.
func ModuleParams(module string) string {
	dir := filepath.Join("/sys/module", module, "parameters")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var params []string
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // write-only
		}
		params = append(params, e.Name()+"="+strings.TrimSpace(string(data)))
	}
	return strings.Join(params, " ")
}

// UnloadModule removes a module with delete_module(2), retrying for up to
// 10 s while it is in use (EAGAIN: an fd elsewhere is still closing).
func UnloadModule(module string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.DeleteModule(module, unix.O_NONBLOCK)
		if err == nil || !(errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBUSY)) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("delete_module %s: %w", module, err)
			}
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LoadModule loads a .ko with finit_module(2); an already loaded module is
// not an error.
func LoadModule(ko, params string) error {
	f, err := os.Open(ko)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("finit_module %s %q: %w", ko, params, err)
	}
	return nil
}

// ReloadableModule returns the .ko path and parameters of a loaded module
// in the VM tier (skipping, or failing when required, where there is
// none), and registers a cleanup that loads it again if the test left it
// unloaded.
func ReloadableModule(t testing.TB, module string) (ko, params string) {
	t.Helper()
	dir := os.Getenv(ModulesEnv)
	if dir == "" {
		Missing(t, ModulesEnv+" not set: not in the VM tier, no kernel modules to load")
	}
	ko = filepath.Join(dir, module+".ko")
	NeedPath(t, ko, "kernel built without "+module+" as a module (=m)?")
	NeedPath(t, filepath.Join("/sys/module", module), "/init did not load "+module)
	params = ModuleParams(module)
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join("/sys/module", module)); err != nil {
			if err := LoadModule(ko, params); err != nil {
				t.Errorf("restoring %s: %v", module, err)
			}
		}
	})
	return ko, params
}
