package rsyncd

import "testing"

func TestParsePorts(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in      string
		want    PortRange
		wantErr bool
	}{
		{"", PortRange{}, false},
		{"30000-30099", PortRange{30000, 30099}, false},
		{" 30000 - 30001 ", PortRange{30000, 30001}, false},
		{"2222", PortRange{2222, 2222}, false},
		{"30099-30000", PortRange{}, true},
		{"0-10", PortRange{}, true},
		{"1-65536", PortRange{}, true},
		{"a-b", PortRange{}, true},
		{"1-2-3", PortRange{}, true},
		{"30000,30001", PortRange{}, true},
	} {
		got, err := ParsePorts(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
