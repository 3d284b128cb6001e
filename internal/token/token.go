// Package token makes the server's random tokens, all from crypto/rand:
// request keys, upload and lease tokens, references, file names.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// Key is a request's private key: 16 random bytes in URL-safe base64, the
// shape of Odoo's own ("Aw7pItGVKFuZ_FOR3U8VFQ==").
func Key() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return base64.URLEncoding.EncodeToString(b)
}

// Hex is n random bytes in hex.
func Hex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
