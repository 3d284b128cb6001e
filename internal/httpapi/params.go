package httpapi

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
)

// maxParamsBytes bounds the body of every method but upload: parameters and
// an authorized_keys file fit in far less.
const maxParamsBytes = 1 << 20

// params are a call's parameters merged from every transport clients use:
// the query string, a urlencoded body (also on GET) and multipart fields and
// files. A body value wins over a query value of the same name.
type params map[string]string

func (p params) get(name string) (string, bool) {
	v, ok := p[name]
	return v, ok
}

// queryParams reads the query string only (upload, whose body is the dump).
func queryParams(r *http.Request) params {
	p := params{}
	for k, vs := range r.URL.Query() {
		if len(vs) > 0 {
			p[k] = vs[0]
		}
	}
	return p
}

// readParams merges the query string and the body. It fails with
// PARAMS:TOO_LARGE or PARAMS:MALFORMED.
func readParams(w http.ResponseWriter, r *http.Request) (params, *failure) {
	p := queryParams(r)
	ct, ctParams, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(w, r.Body, maxParamsBytes)
	var err error
	switch ct {
	case "application/x-www-form-urlencoded":
		err = readURLEncoded(body, p)
	case "multipart/form-data":
		err = readMultipart(body, ctParams["boundary"], p)
	}
	if err == nil {
		return p, nil
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return nil, &failure{Reason: reasonParamsTooLarge,
			Message: fmt.Sprintf("The parameters exceed %d bytes", maxParamsBytes)}
	}
	return nil, &failure{Reason: reasonParamsMalformed, Message: "Cannot read the parameters: " + err.Error()}
}

func readURLEncoded(body io.Reader, p params) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	vs, err := url.ParseQuery(string(b))
	if err != nil {
		return fmt.Errorf("malformed urlencoded body")
	}
	for k, v := range vs {
		if len(v) > 0 {
			p[k] = v[0]
		}
	}
	return nil
}

// readMultipart takes fields and files alike (curl -F ssh_keys=@file sends
// a file, -F ssh_keys=<file or pycurl FORM_CONTENTS a field); nothing is
// written to disk.
func readMultipart(body io.Reader, boundary string, p params) error {
	if boundary == "" {
		return errors.New("multipart body without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return err
			}
			return fmt.Errorf("malformed multipart body")
		}
		name := part.FormName()
		b, err := io.ReadAll(part)
		part.Close()
		if err != nil {
			if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
				return err
			}
			return fmt.Errorf("malformed multipart body")
		}
		if name != "" && !seen[name] {
			seen[name] = true
			p[name] = string(b)
		}
	}
}

// trimmed returns a parameter without surrounding white space.
func (p params) trimmed(name string) string {
	return strings.TrimSpace(p[name])
}
