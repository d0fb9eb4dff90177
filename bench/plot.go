package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WritePlot draws the run over time — requests/s and successes/s on top,
// p99 latency below, sharing the time axis — to path, as PNG or SVG by its
// extension. Two panels rather than two y-axes on one: rates in the tens of
// thousands and latencies in milliseconds do not share a scale.
func (r *Report) WritePlot(path string) error {
	var xs, rps, ok, p99 plotter.XYs
	for _, p := range r.Series {
		if p.Interval < 0.2 {
			continue // a sliver of a second at the end would plot as noise
		}
		xs = append(xs, plotter.XY{X: p.T})
		rps = append(rps, plotter.XY{X: p.T, Y: p.RPS})
		ok = append(ok, plotter.XY{X: p.T, Y: p.SuccessesPS})
		p99 = append(p99, plotter.XY{X: p.T, Y: p.P99ms})
	}
	if len(xs) == 0 {
		return fmt.Errorf("plot %s: the run has no full second to plot", path)
	}

	top := plot.New()
	top.Title.Text = fmt.Sprintf("flashsale bench: %s, %s, %d connections, %.0f req/s overall",
		r.Scenario, r.modeLabel(), r.Connections, r.RPS)
	top.Y.Label.Text = "per second"
	top.Y.Min = 0
	if err := plotutil.AddLinePoints(top, "requests/s", rps, "successes/s", ok); err != nil {
		return err
	}
	top.Legend.Top = true
	top.Legend.Left = true

	bottom := plot.New()
	bottom.X.Label.Text = "seconds"
	bottom.Y.Label.Text = "p99 latency (ms)"
	bottom.Y.Min = 0
	if err := plotutil.AddLinePoints(bottom, "p99", p99); err != nil {
		return err
	}
	bottom.Legend.Top = true
	bottom.Legend.Left = true
	top.X.Min = 0
	bottom.X.Min, bottom.X.Max = top.X.Min, top.X.Max

	const w, h = 10 * vg.Inch, 7 * vg.Inch
	var canvas interface {
		vg.CanvasSizer
		io.WriterTo
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	case ".svg":
		canvas = vgsvg.New(w, h)
	default:
		return fmt.Errorf("plot %s: want a .png or .svg file name", path)
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6),
		PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(10)}
	plots := [][]*plot.Plot{{top}, {bottom}}
	cs := plot.Align(plots, tiles, dc)
	top.Draw(cs[0][0])
	bottom.Draw(cs[1][0])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}
