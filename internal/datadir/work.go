package datadir

import "path/filepath"

// Work is the folder of the runs' working folders (<root>/work): each run
// gets one there, owned by the user its tools run as.
func (d Dir) Work() string { return filepath.Join(d.root, "work") }
