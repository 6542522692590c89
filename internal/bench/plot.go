package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Colors of the plot's series.
var (
	colorBatched  = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colorBaseline = color.RGBA{0xd6, 0x27, 0x28, 0xff}
	colorAxis     = color.RGBA{0x33, 0x33, 0x33, 0xff}
	colorGrid     = color.RGBA{0xe0, 0xe0, 0xe0, 0xff}
	colorIdeal    = color.RGBA{0x99, 0x99, 0x99, 0xff}
)

// WritePlot draws the sweep as a PNG: throughput against offered load on
// the left, p99 latency against offered load on the right, both on
// logarithmic axes so that the batched configuration and the baseline, two
// orders of magnitude apart, fit side by side. title goes on top.
func (s *SweepReport) WritePlot(w io.Writer, title string) error {
	const width, height = 1400, 620
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	drawText(img, 20, 24, title, colorAxis)

	var offered, throughput, latency []float64
	for _, p := range s.Points {
		offered = append(offered, p.OfferedRate)
		throughput = append(throughput, p.Throughput, p.OfferedRate)
		latency = append(latency, max(p.P99Ms, 0.1))
	}
	xr := logRange(offered)
	left := panel{rect: image.Rect(90, 60, 670, 540), x: xr, y: logRange(throughput),
		title: "throughput (commands/s) vs offered load (commands/s)"}
	right := panel{rect: image.Rect(790, 60, 1370, 540), x: xr, y: logRange(latency),
		title: "p99 produce->outcome latency (ms) vs offered load (commands/s)"}
	left.axes(img)
	right.axes(img)
	// The ideal: every offered command processed.
	left.line(img, xr.lo, xr.lo, xr.hi, xr.hi, colorIdeal, true)

	for _, series := range []struct {
		label string
		color color.RGBA
	}{{"batched", colorBatched}, {"baseline", colorBaseline}} {
		var prev *SweepPoint
		for i := range s.Points {
			p := &s.Points[i]
			if p.Label != series.label {
				continue
			}
			left.marker(img, p.OfferedRate, p.Throughput, series.color)
			right.marker(img, p.OfferedRate, max(p.P99Ms, 0.1), series.color)
			if prev != nil {
				left.line(img, prev.OfferedRate, prev.Throughput, p.OfferedRate, p.Throughput, series.color, false)
				right.line(img, prev.OfferedRate, max(prev.P99Ms, 0.1), p.OfferedRate, max(p.P99Ms, 0.1), series.color, false)
			}
			prev = p
		}
	}
	// Legend.
	legend := []struct {
		label string
		color color.RGBA
	}{
		{"batched (" + peakLabel(s.Peaks["batched"]) + ")", colorBatched},
		{"per-command baseline (" + peakLabel(s.Peaks["baseline"]) + ")", colorBaseline},
		{"offered = processed", colorIdeal},
	}
	x := 100
	for _, l := range legend {
		fillRect(img, image.Rect(x, 585, x+14, 599), l.color)
		drawText(img, x+20, 597, l.label, colorAxis)
		x += 30 + 7*len(l.label) + 20
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode the plot: %w", err)
	}
	return nil
}

func peakLabel(peak float64) string {
	if peak <= 0 {
		return "not run"
	}
	return "peak " + fmtCount(peak) + "/s"
}

// axisRange is a logarithmic axis range, in decades.
type axisRange struct{ lo, hi float64 }

func logRange(values []float64) axisRange {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if v > 0 {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		return axisRange{1, 10}
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	return axisRange{lo, hi}
}

func (r axisRange) frac(v float64) float64 {
	return (math.Log10(v) - math.Log10(r.lo)) / (math.Log10(r.hi) - math.Log10(r.lo))
}

type panel struct {
	rect  image.Rectangle
	x, y  axisRange
	title string
}

func (p panel) point(x, y float64) (int, int) {
	px := p.rect.Min.X + int(math.Round(p.x.frac(x)*float64(p.rect.Dx())))
	py := p.rect.Max.Y - int(math.Round(p.y.frac(y)*float64(p.rect.Dy())))
	return px, py
}

func (p panel) axes(img *image.RGBA) {
	drawText(img, p.rect.Min.X, p.rect.Min.Y-12, p.title, colorAxis)
	// Grid and ticks at 1, 2 and 5 times each power of ten.
	for decade := p.x.lo; decade < p.x.hi*1.001; decade *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := decade * m
			if v > p.x.hi*1.001 {
				break
			}
			x, _ := p.point(v, p.y.lo)
			vline(img, x, p.rect.Min.Y, p.rect.Max.Y, colorGrid)
			label := axisLabel(v)
			drawText(img, x-3*len(label), p.rect.Max.Y+18, label, colorAxis)
		}
	}
	for decade := p.y.lo; decade < p.y.hi*1.001; decade *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := decade * m
			if v > p.y.hi*1.001 {
				break
			}
			_, y := p.point(p.x.lo, v)
			hline(img, p.rect.Min.X, p.rect.Max.X, y, colorGrid)
			label := axisLabel(v)
			drawText(img, p.rect.Min.X-8-7*len(label), y+4, label, colorAxis)
		}
	}
	hline(img, p.rect.Min.X, p.rect.Max.X, p.rect.Max.Y, colorAxis)
	vline(img, p.rect.Min.X, p.rect.Min.Y, p.rect.Max.Y, colorAxis)
}

func axisLabel(v float64) string {
	switch {
	case v >= 1e6:
		return trimFloat(v/1e6) + "M"
	case v >= 1e3:
		return trimFloat(v/1e3) + "k"
	default:
		return trimFloat(v)
	}
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func (p panel) marker(img *image.RGBA, x, y float64, c color.RGBA) {
	px, py := p.point(x, y)
	for dy := -4; dy <= 4; dy++ {
		for dx := -4; dx <= 4; dx++ {
			if dx*dx+dy*dy <= 16 {
				setClipped(img, p.rect, px+dx, py+dy, c)
			}
		}
	}
}

// line draws a two-pixel line between two data points, dashed if asked.
func (p panel) line(img *image.RGBA, x0, y0, x1, y1 float64, c color.RGBA, dashed bool) {
	ax, ay := p.point(x0, y0)
	bx, by := p.point(x1, y1)
	steps := max(abs(bx-ax), abs(by-ay), 1)
	for i := 0; i <= steps; i++ {
		if dashed && (i/6)%2 == 1 {
			continue
		}
		x := ax + (bx-ax)*i/steps
		y := ay + (by-ay)*i/steps
		setClipped(img, p.rect, x, y, c)
		setClipped(img, p.rect, x+1, y, c)
		setClipped(img, p.rect, x, y+1, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func setClipped(img *image.RGBA, clip image.Rectangle, x, y int, c color.RGBA) {
	if image.Pt(x, y).In(clip.Inset(-5)) {
		img.SetRGBA(x, y, c)
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func fillRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

func drawText(img *image.RGBA, x, y int, text string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(text)
}
