// Package docs holds no code: its test keeps the repository's documentation
// self-contained, so a clone has every document its README, DESIGN.md files
// and comments point to.
package docs

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Written in two parts so this file does not match itself.
var outside = []string{"../" + "shared", "/work/" + "shared"}

// self is this file, whose comments name documents as examples.
var self = filepath.Join("docs", "docs_test.go")

var (
	// A markdown link target: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// A document named in a comment or in prose: NAME.md, with any path.
	mdRef = regexp.MustCompile(`[A-Za-z0-9_./-]*\b[A-Za-z0-9_-]+\.md\b`)
)

// TestDocsStayInsideTheRepository fails on a reference to a document outside
// the repository: a path to the shared project documents, a markdown link to
// a file (or a heading) that does not exist here, or a comment that cites a
// document by a name that is no path from the repository root (or, with a
// directory, from the file's own). Comments name docs/api.md, docs/architecture.md, docs/scenarios.md or
// a package's DESIGN.md by its path.
func TestDocsStayInsideTheRepository(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "testdata", "results":
				return filepath.SkipDir
			}
			return nil
		}
		if !textFile(d.Name()) {
			return nil
		}
		checkFile(t, root, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func textFile(name string) bool {
	switch filepath.Ext(name) {
	case ".go", ".md", ".sh", ".yml", ".yaml", ".mod":
		return true
	}
	return name == "Makefile" || name == "Dockerfile"
}

func checkFile(t *testing.T, root, rel string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	isMD, isGo := strings.HasSuffix(rel, ".md"), strings.HasSuffix(rel, ".go")
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		for _, o := range outside {
			if strings.Contains(line, o) {
				t.Errorf("%s:%d: refers to %s, outside the repository: %s", rel, n, o, line)
			}
		}
		if isMD {
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				if msg := checkLink(root, rel, m[1]); msg != "" {
					t.Errorf("%s:%d: link %s: %s", rel, n, m[1], msg)
				}
			}
			// Prose names a document by its path from the repository root
			// or from the file's own directory; "a DESIGN.md" is generic.
			for _, ref := range mdRef.FindAllString(line, -1) {
				if ref != "DESIGN.md" && !exists(root, ref) && !exists(filepath.Join(root, filepath.Dir(rel)), ref) {
					t.Errorf("%s:%d: names %s, which is no file here", rel, n, ref)
				}
			}
		}
		if _, comment, ok := strings.Cut(line, "//"); ok && isGo && rel != self {
			for _, ref := range mdRef.FindAllString(comment, -1) {
				if !exists(root, ref) && !(strings.Contains(ref, "/") && exists(filepath.Join(root, filepath.Dir(rel)), ref)) {
					t.Errorf("%s:%d: cites %s, which is no file from the repository root "+
						"(name docs/api.md, docs/architecture.md, docs/scenarios.md or PKG/DESIGN.md)", rel, n, ref)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

func exists(dir, ref string) bool {
	_, err := os.Stat(filepath.Join(dir, ref))
	return err == nil
}

// checkLink resolves a markdown link of file rel; "" when it is fine.
// Absolute URLs are left alone (other projects' pages); a relative one must
// name a file here, and a #heading must be one of that file's headings.
func checkLink(root, rel, target string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	file, anchor, _ := strings.Cut(target, "#")
	path := filepath.Join(root, rel)
	if file != "" {
		path = filepath.Join(filepath.Dir(path), file)
		if !strings.HasPrefix(path, root+string(filepath.Separator)) {
			return "points outside the repository"
		}
		if _, err := os.Stat(path); err != nil {
			return "no such file"
		}
	}
	if anchor == "" || !strings.HasSuffix(path, ".md") {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " "); ok && strings.HasPrefix(l, "#") && slug(h) == anchor {
			return ""
		}
	}
	return "no heading #" + anchor
}

// slug is the anchor GitHub gives a heading: lower case, spaces to hyphens,
// other punctuation dropped.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}
