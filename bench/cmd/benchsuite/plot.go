package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// series is one server's convergence samples (ms) at one N.
type series struct {
	name string
	ms   []float64
}

var palette = map[string]color.RGBA{
	"meshop-delta": {0x1f, 0x77, 0xb4, 0xff},
	"meshop-sotw":  {0x2c, 0xa0, 0x2c, 0xff},
	"consul-delta": {0xd6, 0x27, 0x28, 0xff},
	// Consul with its update rate unlimited: orange, beside its default's red.
	"consul-delta-max": {0xff, 0x7f, 0x0e, 0xff},
}

// plotCDFs draws one panel per N: the cumulative distribution of EDS
// convergence times (log-scale x, 10ms to 100s) of every server.
func plotCDFs(path string, panels []int, data map[int][]series) error {
	const pw, ph, margin, top = 420, 320, 50, 40
	w := max(pw*len(panels)+margin, 960)
	h := ph + top + 70
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)
	black := color.RGBA{0, 0, 0, 0xff}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	text(img, 10, 18, black, "EDS convergence: one upstream instance goes critical -> fraction of nodes that ACKed endpoints without it")
	const lo, hi = 1.0, 5.0 // log10 ms: 10ms .. 100s
	for pi, n := range panels {
		x0 := margin + pi*pw
		y0 := top
		px, py := x0+10, y0+10
		pwid, phei := pw-40, ph-40
		xOf := func(ms float64) int {
			l := math.Log10(max(ms, 10))
			return px + int((l-lo)/(hi-lo)*float64(pwid))
		}
		yOf := func(f float64) int { return py + phei - int(f*float64(phei)) }
		for _, tick := range []float64{10, 100, 1000, 10000, 100000} {
			x := xOf(tick)
			vline(img, x, py, py+phei, grey)
			label := map[float64]string{10: "10ms", 100: "100ms", 1000: "1s", 10000: "10s", 100000: "100s"}[tick]
			text(img, x-12, py+phei+16, black, label)
		}
		for _, f := range []float64{0, 0.25, 0.5, 0.75, 1} {
			hline(img, px, px+pwid, yOf(f), grey)
			if pi == 0 {
				text(img, 2, yOf(f)+4, black, fmt.Sprintf("%.2f", f))
			}
		}
		rect(img, px, py, px+pwid, py+phei, black)
		text(img, px+pwid/2-30, py-4, black, fmt.Sprintf("N = %d nodes", n))
		for _, s := range data[n] {
			ms := slices.Clone(s.ms)
			slices.Sort(ms)
			c := palette[s.name]
			prevX, prevY := xOf(10), yOf(0)
			for i, v := range ms {
				x, y := xOf(v), yOf(float64(i+1)/float64(len(ms)))
				line(img, prevX, prevY, x, prevY, c) // step
				line(img, x, prevY, x, y, c)
				prevX, prevY = x, y
			}
		}
	}
	lx := margin + 10
	for _, name := range servers {
		c := palette[name]
		for d := 0; d < 3; d++ {
			hline(img, lx, lx+30, h-28+d, c)
		}
		text(img, lx+36, h-22, black, name)
		lx += 180
	}
	text(img, margin+10, h-6, black, "x: time from the TTL check flip (log scale); y: fraction of nodes converged")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func text(img *image.RGBA, x, y int, c color.Color, s string) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func rect(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	hline(img, x0, x1, y0, c)
	hline(img, x0, x1, y1, c)
	vline(img, x0, y0, y1, c)
	vline(img, x1, y0, y1, c)
}

// line draws a thick axis-parallel (or any) segment.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= steps; i++ {
		x := x0 + (x1-x0)*i/steps
		y := y0 + (y1-y0)*i/steps
		img.Set(x, y, c)
		img.Set(x+1, y, c)
		img.Set(x, y+1, c)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
