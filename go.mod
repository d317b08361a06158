module github.com/gearwork/gearwork

go 1.26.8
