// Command chart draws an SVG bar chart of one metric of Go benchmarks, per
// workload and design. It reads raw `go test -bench` output (not benchstat's
// tables), from the files named as arguments or from standard input, and
// writes the SVG to standard output or to -o.
//
// It expects the names of the sse benchmarks, BenchmarkW<n>/design=<name>
// or, for the fan-out workloads, BenchmarkF<n>/subs=<n>/design=<name>,
// followed, when GOMAXPROCS is not 1, by -<GOMAXPROCS>. The parts of a name
// other than the design name the workload ("F1 subs=100"). For each
// GOMAXPROCS, workload and design it draws the median of the runs (go test
// -count) as a bar, with a thin line from the smallest to the largest run;
// each workload's panel has its own linear scale, which ends at -clip times
// the panel's smallest median (default 10; 0 fits every bar), so that one
// slow design does not flatten the others: longer bars are cut, marked with
// a break, and labelled with their value. A design whose runs report
// hol-blocked=1 (W7, F3) in any run has ✗ before its value: the stalled key
// or subscriber blocked the others until the benchmark released it.
// Benchmarks without the metric are left out.
//
//	go run ./cmd/chart -metric ns/msg -o results/ns-per-msg.svg results/raw.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"html"
	"io"
	"log"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("chart: ")
	metric := flag.String("metric", "ns/msg", "the unit of the metric to chart")
	out := flag.String("o", "", "output file (default standard output)")
	title := flag.String("title", "", "chart title (default: the metric, median of runs)")
	clip := flag.Float64("clip", 10, "end each panel's scale at this many times its smallest median; 0: fit every bar")
	flag.Parse()

	var runs []run
	if flag.NArg() == 0 {
		runs = parse(os.Stdin, *metric)
	}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			log.Fatal(err)
		}
		runs = append(runs, parse(f, *metric)...)
		f.Close()
	}
	if len(runs) == 0 {
		log.Fatalf("no benchmark reports %s", *metric)
	}
	if *title == "" {
		*title = *metric + ", median of runs (lower is better)"
	}
	svg := draw(summarize(runs), *title, *metric, *clip)
	if *out == "" {
		os.Stdout.WriteString(svg)
		return
	}
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		log.Fatal(err)
	}
}

// A run is one benchmark result line's value of the metric.
type run struct {
	procs    int
	workload string // "W1", or "F1 subs=100"
	design   string // "broker-block"
	value    float64
	blocked  bool // the line reports hol-blocked above 0
}

// parse returns the runs in r that report metric.
func parse(r io.Reader, metric string) []run {
	var runs []run
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name, procs := splitProcs(strings.TrimPrefix(f[0], "Benchmark"))
		var workload []string
		design := ""
		for part := range strings.SplitSeq(name, "/") {
			if d, ok := strings.CutPrefix(part, "design="); ok {
				design = d
			} else {
				workload = append(workload, part)
			}
		}
		blocked := false
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil && f[i+1] == "hol-blocked" && v > 0 {
				blocked = true
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			if f[i+1] != metric {
				continue
			}
			v, err := strconv.ParseFloat(f[i], 64)
			if err == nil {
				runs = append(runs, run{procs, strings.Join(workload, " "), design, v, blocked})
			}
		}
	}
	if err := sc.Err(); err != nil {
		log.Fatal(err)
	}
	return runs
}

// splitProcs splits the -GOMAXPROCS suffix off a benchmark name; without
// one, GOMAXPROCS was 1.
func splitProcs(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name, 1
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 1 {
		return name, 1
	}
	return name[:i], n
}

// A bar is the summary of one design's runs of one workload.
type bar struct {
	design           string
	median, min, max float64
	blocked          bool // some run reported hol-blocked
}

// A panel is one workload at one GOMAXPROCS.
type panel struct {
	procs    int
	workload string
	bars     []bar // in the order the designs first appear in the input
}

// summarize groups runs into panels, ordered by GOMAXPROCS and workload.
func summarize(runs []run) []panel {
	type key struct {
		procs            int
		workload, design string
	}
	values := make(map[key][]float64)
	blocked := make(map[key]bool)
	var order []key
	for _, r := range runs {
		k := key{r.procs, r.workload, r.design}
		if _, ok := values[k]; !ok {
			order = append(order, k)
		}
		values[k] = append(values[k], r.value)
		blocked[k] = blocked[k] || r.blocked
	}
	var panels []panel
	for _, k := range order {
		i := slices.IndexFunc(panels, func(p panel) bool { return p.procs == k.procs && p.workload == k.workload })
		if i < 0 {
			panels = append(panels, panel{procs: k.procs, workload: k.workload})
			i = len(panels) - 1
		}
		v := values[k]
		slices.Sort(v)
		med := v[len(v)/2]
		if len(v)%2 == 0 {
			med = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		panels[i].bars = append(panels[i].bars, bar{k.design, med, v[0], v[len(v)-1], blocked[k]})
	}
	slices.SortStableFunc(panels, func(a, b panel) int {
		if a.procs != b.procs {
			return a.procs - b.procs
		}
		return strings.Compare(a.workload, b.workload)
	})
	return panels
}

// Layout, in pixels.
const (
	width    = 960
	margin   = 20
	labelW   = 190 // design names
	valueW   = 110 // the median's label, right of the bar
	rowH     = 18
	barH     = 13
	headH    = 26 // a panel's title
	panelGap = 14
	titleH   = 34
)

// palette gives each design one colour in every panel.
var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// draw returns the SVG document.
func draw(panels []panel, title, metric string, clip float64) string {
	colour := make(map[string]string)
	height := margin + titleH
	anyBlocked := false
	for _, p := range panels {
		for _, b := range p.bars {
			if _, ok := colour[b.design]; !ok {
				colour[b.design] = palette[len(colour)%len(palette)]
			}
			anyBlocked = anyBlocked || b.blocked
		}
		height += headH + len(p.bars)*rowH + panelGap
	}
	if anyBlocked {
		height += rowH
	}
	height += margin

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="%d" font-size="16" font-weight="bold">%s</text>`+"\n", margin, margin+16, esc(title))
	y := margin + titleH
	barMax := float64(width - 2*margin - labelW - valueW)
	for _, p := range panels {
		scale, least := 0.0, p.bars[0].median
		for _, b := range p.bars {
			scale, least = max(scale, b.max), min(least, b.median)
		}
		if clip > 0 && least > 0 {
			scale = min(scale, clip*least)
		}
		if scale <= 0 {
			scale = 1
		}
		at := func(v float64) float64 { return float64(margin+labelW) + barMax*min(v, scale)/scale }
		fmt.Fprintf(&s, `<text x="%d" y="%d" font-weight="bold">%s, GOMAXPROCS=%d</text>`+"\n", margin, y+16, esc(p.workload), p.procs)
		fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`+"\n", margin+labelW, y+headH-4, margin+labelW, y+headH+len(p.bars)*rowH)
		y += headH
		for _, b := range p.bars {
			x0 := float64(margin + labelW)
			mid := float64(y) + rowH/2.0
			fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", margin+labelW-6, mid, esc(b.design))
			fmt.Fprintf(&s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="%s"><title>%s %s: median %s, min %s, max %s %s</title></rect>`+"\n",
				x0, mid-barH/2.0, at(b.median)-x0, barH, colour[b.design], esc(p.workload), esc(b.design), num(b.median), num(b.min), num(b.max), esc(metric))
			if b.median > scale { // cut: a white break near the end
				x := at(b.median) - 12
				fmt.Fprintf(&s, `<path d="M%.1f %.1f l4 %d M%.1f %.1f l4 %d" stroke="white" stroke-width="2"/>`+"\n",
					x, mid-barH/2.0-1, barH+2, x+5, mid-barH/2.0-1, barH+2)
			}
			if b.max > b.min && b.min < scale {
				fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black" stroke-width="1"/>`+"\n",
					at(b.min), mid, at(b.max), mid)
			}
			label := num(b.median)
			if b.blocked {
				label = "✗ " + label
			}
			fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" dominant-baseline="middle">%s</text>`+"\n", at(b.max)+6, mid, esc(label))
			y += rowH
		}
		y += panelGap
	}
	if anyBlocked {
		fmt.Fprintf(&s, `<text x="%d" y="%d">%s</text>`+"\n", margin, y+12,
			esc("✗: hol-blocked; the stalled key (W7) or subscriber (F3) blocked the others until the benchmark released it after 0.5 s"))
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// num formats a value with about three significant digits.
func num(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func esc(s string) string { return html.EscapeString(s) }
