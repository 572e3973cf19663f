# Bar chart of a squeezefs benchmark run (scripts/bench/bench.py writes the
# data file).  Usage: gnuplot -e "datafile='x.dat'; outfile='x.png'" chart.gp
set terminal pngcairo size 1400,600 font ",10"
set output outfile
set multiplot layout 1,2 title "squeezefs benchmark: throughput and compression ratio"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set bmargin 9
set xtics rotate by 30 right
set key inside top right
set key autotitle columnhead
set logscale y
set ylabel "MiB/s (log scale)"
set title "throughput (larger is better; missing = failed)"
plot for [i=2:5] datafile using i:xtic(1) title columnheader(i)
unset logscale y
set title "compression ratio, logical / allocated (larger is better)"
set ylabel "ratio"
set key off
plot datafile using 6:xtic(1) lc rgb "#4a7"
unset multiplot
